//! Generated protobuf types for certledger (proto/certledger/**), and the codec that
//! turns certificate events into (type, schema version, bytes) for the event log.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod common {
    pub mod v1 {
        tonic::include_proto!("certledger.common.v1");
    }
}
pub mod events {
    pub mod v1 {
        tonic::include_proto!("certledger.events.v1");
    }
}
pub mod order {
    pub mod v1 {
        tonic::include_proto!("certledger.order.v1");
    }
}
pub mod issuance {
    pub mod v1 {
        tonic::include_proto!("certledger.issuance.v1");
    }
}
pub mod deployment {
    pub mod v1 {
        tonic::include_proto!("certledger.deployment.v1");
    }
}
pub mod revocation {
    pub mod v1 {
        tonic::include_proto!("certledger.revocation.v1");
    }
}
pub mod query {
    pub mod v1 {
        tonic::include_proto!("certledger.query.v1");
    }
}
pub mod auth {
    pub mod v1 {
        tonic::include_proto!("certledger.auth.v1");
    }
}

/// The encoded FileDescriptorSet of every proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/certledger_descriptor.bin"));

pub mod codec;
