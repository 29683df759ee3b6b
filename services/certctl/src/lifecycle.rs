//! The commands after issuance: `renew`, `revoke`, `targets` and `deploy`.

use certledger_proto::common::v1::RevocationReason;
use certledger_proto::deployment::v1::register_target_request::Kind;
use certledger_proto::deployment::v1::{
    DeployRequest, ListTargetsRequest, RegisterTargetRequest, RemoveTargetRequest, Target,
};
use certledger_proto::events::v1::certificate_event::Event;
use certledger_proto::events::v1::{FileTarget, NginxTarget, WebhookTarget};
use certledger_proto::order::v1::{Deployment, GetHistoryRequest, RenewCertificateRequest};
use certledger_proto::revocation::v1::RevokeCertificateRequest;
use tokio_stream::StreamExt;

use crate::args::Args;
use crate::{Ctx, Failure, finish, follow, render};

/// The deployment state of a request still being carried out.
const REQUESTED: &str = "requested";
/// The deployment state of a verified installation.
const SUCCEEDED: &str = "succeeded";

pub async fn renew(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let id = args.required_positional("certificate id")?;
    let csr_pem = match args.value("csr")? {
        Some(path) => std::fs::read_to_string(&path)
            .map_err(|e| Failure::Usage(format!("--csr {path}: {e}")))?,
        None => String::new(),
    };
    let wait = args.switch("wait");
    let quiet = args.switch("quiet");
    args.finish()?;
    let response = ctx
        .order()
        .renew_certificate(ctx.request(RenewCertificateRequest {
            certificate_id: id.clone(),
            csr_pem,
        })?)
        .await?
        .into_inner();
    let successor = response
        .successor
        .ok_or_else(|| Failure::Other(format!("the server renewed {id} but named no successor")))?;
    let predecessor = response.predecessor.unwrap_or_default();
    finish(ctx, Some(&predecessor), successor, wait, quiet).await
}

/// `key-compromise` (or `KEY_COMPROMISE`) → the proto reason.
fn revocation_reason(name: &str) -> Result<RevocationReason, Failure> {
    let upper = name.trim().to_ascii_uppercase().replace('-', "_");
    RevocationReason::from_str_name(&format!("REVOCATION_REASON_{upper}")).ok_or_else(|| {
        Failure::Usage(format!(
            "--reason {name:?}: use unspecified, key-compromise, ca-compromise, \
             affiliation-changed, superseded, cessation-of-operation, certificate-hold, \
             privilege-withdrawn or aa-compromise"
        ))
    })
}

pub async fn revoke(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let id = args.required_positional("certificate id")?;
    let reason = args.value("reason")?.ok_or_else(|| {
        Failure::Usage("revoke needs --reason REASON (e.g. key-compromise, superseded)".into())
    })?;
    let reason = revocation_reason(&reason)?;
    let comment = args.value("comment")?.unwrap_or_default();
    args.finish()?;
    let certificate = ctx
        .revocation()
        .revoke_certificate(ctx.request(RevokeCertificateRequest {
            certificate_id: id,
            reason: reason as i32,
            comment,
        })?)
        .await?
        .into_inner();
    finish(ctx, None, certificate, false, false).await
}

pub async fn targets(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    match args.next_positional().as_deref() {
        None | Some("list") => list_targets(ctx, args).await,
        Some("add") => add_target(ctx, args).await,
        Some("remove" | "rm") => remove_target(ctx, args).await,
        Some(other) => Err(Failure::Usage(format!(
            "unknown targets command {other:?}: use list, add or remove"
        ))),
    }
}

async fn list_targets(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    args.finish()?;
    let targets = ctx
        .deployment()
        .list_targets(ctx.request(ListTargetsRequest {})?)
        .await?
        .into_inner()
        .targets;
    if ctx.json {
        let list: Vec<_> = targets.iter().map(render::target_value).collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        print!("{}", render::target_table(&targets));
    }
    Ok(())
}

/// A command line given as one string, split at spaces (no quoting).
fn argv(args: &mut Args, name: &str) -> Result<Vec<String>, Failure> {
    Ok(args
        .value(name)?
        .map(|line| line.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default())
}

fn required(args: &mut Args, name: &str, kind: &str) -> Result<String, Failure> {
    args.value(name)?
        .ok_or_else(|| Failure::Usage(format!("a {kind} target needs --{name}")))
}

async fn add_target(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let name = args.required_positional("target name")?;
    let kind_name = args
        .value("kind")?
        .ok_or_else(|| Failure::Usage("targets add needs --kind file|nginx|webhook".into()))?;
    let mut webhook_secret = String::new();
    let kind = match kind_name.as_str() {
        "file" => Kind::File(FileTarget {
            certificate_path: required(args, "cert-path", "file")?,
            key_path: required(args, "key-path", "file")?,
            chain_path: args.value("chain-path")?.unwrap_or_default(),
            command: argv(args, "command")?,
        }),
        "nginx" => Kind::Nginx(NginxTarget {
            certificate_path: required(args, "cert-path", "nginx")?,
            key_path: required(args, "key-path", "nginx")?,
            reload_command: argv(args, "reload")?,
            verify_address: required(args, "verify-address", "nginx")?,
            verify_server_name: args.value("verify-server-name")?.unwrap_or_default(),
        }),
        "webhook" => {
            let path = required(args, "secret-file", "webhook")?;
            webhook_secret = std::fs::read_to_string(&path)
                .map_err(|e| Failure::Usage(format!("--secret-file {path}: {e}")))?
                .trim_end_matches(['\r', '\n'])
                .to_owned();
            Kind::Webhook(WebhookTarget {
                url: required(args, "url", "webhook")?,
                secret_id: String::new(),
                max_attempts: args.parsed::<u32>("max-attempts")?.unwrap_or(0),
            })
        }
        other => {
            return Err(Failure::Usage(format!(
                "--kind {other:?}: use file, nginx or webhook"
            )));
        }
    };
    let quiet = args.switch("quiet");
    args.finish()?;
    let target = ctx
        .deployment()
        .register_target(ctx.request(RegisterTargetRequest {
            name,
            kind: Some(kind),
            webhook_secret,
        })?)
        .await?
        .into_inner();
    print_target(ctx, &target, quiet);
    if !quiet && !ctx.json {
        println!(
            "\nnext: certctl deploy <certificate id> --target {}",
            target.target_id
        );
    }
    Ok(())
}

async fn remove_target(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let target_id = args.required_positional("target id")?;
    args.finish()?;
    let target = ctx
        .deployment()
        .remove_target(ctx.request(RemoveTargetRequest { target_id })?)
        .await?
        .into_inner();
    print_target(ctx, &target, false);
    Ok(())
}

fn print_target(ctx: &Ctx, target: &Target, quiet: bool) {
    if quiet {
        println!("{}", target.target_id);
    } else if ctx.json {
        println!("{}", render::target_value(target));
    } else {
        print!("{}", render::target_text(target));
    }
}

/// Installs the certificate on the target and waits until the deployment is verified or
/// failed; progress (the certificate's events) on stderr.
pub async fn deploy(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let id = args.required_positional("certificate id")?;
    let target_id = args.value("target")?.ok_or_else(|| {
        Failure::Usage("deploy needs --target TARGET-ID (see certctl targets)".into())
    })?;
    args.finish()?;
    let before = ctx.certificate(&id).await?;
    let mut stream = ctx.watch(&id, before.version).await?;
    eprintln!(
        "deploying {id} to {target_id}: install, then verify; Ctrl-C stops waiting, not the deployment"
    );
    let mut client = ctx.deployment();
    let call = client.deploy(ctx.request(DeployRequest {
        certificate_id: id.clone(),
        target_id: target_id.clone(),
    })?);
    tokio::pin!(call);
    let mut watching = true;
    // The call returns once the deployment is verified or failed; meanwhile its events.
    let mut deployment = loop {
        tokio::select! {
            result = &mut call => break result?.into_inner(),
            entry = stream.next(), if watching => match entry {
                Some(Ok(entry)) => eprintln!("  {}", render::history_line(&entry)),
                // The watch ending does not end the deployment.
                _ => watching = false,
            },
        }
    };
    if deployment.state == REQUESTED {
        // Another request is carrying it out: follow it until it settles.
        if !watching {
            stream = ctx.watch(&id, before.version).await?;
        }
        let deployment_id = deployment.deployment_id.clone();
        let current = follow(ctx, &id, &mut stream, |c| {
            c.deployments
                .iter()
                .any(|d| d.deployment_id == deployment_id && d.state != REQUESTED)
        })
        .await?;
        if let Some(d) = current
            .deployments
            .into_iter()
            .find(|d| d.deployment_id == deployment_id)
        {
            deployment = d;
        }
    }
    if ctx.json {
        println!("{}", render::deployment_value(&id, &deployment));
    } else {
        print!("{}", render::deployment_text(&id, &deployment));
    }
    if deployment.state == SUCCEEDED {
        return Ok(());
    }
    let why = failure_of(ctx, &id, &deployment).await?;
    Err(Failure::Other(format!(
        "deployment of {id} to {target_id} ended {}{why}",
        deployment.state
    )))
}

/// `: <what the DeploymentFailed event says>` for a failed deployment, or nothing.
async fn failure_of(ctx: &Ctx, id: &str, deployment: &Deployment) -> Result<String, Failure> {
    let entries = ctx
        .order()
        .get_history(ctx.request(GetHistoryRequest {
            certificate_id: id.to_owned(),
        })?)
        .await?
        .into_inner()
        .entries;
    let failed = entries.iter().rev().find_map(|e| {
        match e.event.as_ref().and_then(|ev| ev.event.as_ref()) {
            Some(event @ Event::DeploymentFailed(f))
                if f.deployment_id == deployment.deployment_id =>
            {
                Some(render::event_summary(Some(event)))
            }
            _ => None,
        }
    });
    Ok(failed.map(|s| format!(": {s}")).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_in_any_spelling() {
        for (name, reason) in [
            ("key-compromise", RevocationReason::KeyCompromise),
            ("KEY_COMPROMISE", RevocationReason::KeyCompromise),
            ("superseded", RevocationReason::Superseded),
            (
                "cessation-of-operation",
                RevocationReason::CessationOfOperation,
            ),
            ("aa-compromise", RevocationReason::AaCompromise),
            ("unspecified", RevocationReason::Unspecified),
        ] {
            assert_eq!(revocation_reason(name).ok(), Some(reason), "{name}");
        }
        for bad in ["", "compromised", "key compromise", "keyCompromise"] {
            assert!(revocation_reason(bad).is_err(), "{bad:?}");
        }
    }
}
