//! `tokens` (create, list, revoke API tokens) and `whoami`; and where certctl finds its
//! own token.

use std::path::PathBuf;

use certledger_domain::access::{parse_role, role_name};
use certledger_proto::auth::v1::token_service_client::TokenServiceClient;
use certledger_proto::auth::v1::{
    CreateTokenRequest, ListTokensRequest, RevokeTokenRequest, Token, WhoAmIRequest,
};
use certledger_proto::common::v1::Role;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::args::Args;
use crate::{Ctx, Failure, render};

/// Where certd writes its first token (certd's default data directory).
const DEFAULT_TOKEN_FILE: &str = "./certledger-data/admin.token";

/// The token to send: `CERTLEDGER_TOKEN`, else the file `--token-file` /
/// `CERTLEDGER_TOKEN_FILE` names, else certd's default token file if it exists.
pub fn find_token(token_file: Option<String>) -> Result<Option<String>, Failure> {
    if let Some(token) = std::env::var("CERTLEDGER_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Ok(Some(token.trim().to_owned()));
    }
    let named = token_file.or_else(|| {
        std::env::var("CERTLEDGER_TOKEN_FILE")
            .ok()
            .filter(|f| !f.is_empty())
    });
    let path = match named {
        Some(path) => PathBuf::from(path),
        None => {
            let default = PathBuf::from(DEFAULT_TOKEN_FILE);
            if !default.exists() {
                return Ok(None);
            }
            default
        }
    };
    let token = std::fs::read_to_string(&path)
        .map_err(|e| Failure::Usage(format!("token file {}: {e}", path.display())))?;
    Ok(Some(token.trim().to_owned()))
}

fn client(ctx: &Ctx) -> TokenServiceClient<Channel> {
    TokenServiceClient::new(ctx.channel.clone())
}

fn roles_text(roles: &[i32]) -> String {
    roles
        .iter()
        .filter_map(|r| Role::try_from(*r).ok())
        .map(role_name)
        .collect::<Vec<_>>()
        .join(",")
}

fn token_value(t: &Token) -> Value {
    json!({
        "token_id": t.token_id,
        "tenant": t.tenant,
        "name": t.name,
        "roles": roles_text(&t.roles).split(',').filter(|r| !r.is_empty()).collect::<Vec<_>>(),
        "created_at": render::time(t.created_at.as_ref()),
        "expires_at": t.expires_at.as_ref().map(|e| render::time(Some(e))),
        "revoked": t.revoked,
        "revoked_reason": t.revoked_reason,
    })
}

/// `tokens [list] | tokens create NAME --role R… [--valid-days N] | tokens revoke ID`.
pub async fn tokens(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    match args.next_positional().as_deref() {
        None | Some("list") => {
            let tenant = args.value("for-tenant")?.unwrap_or_default();
            args.finish()?;
            let list = client(ctx)
                .list_tokens(ctx.request(ListTokensRequest { tenant })?)
                .await?
                .into_inner()
                .tokens;
            if ctx.json {
                let values: Vec<Value> = list.iter().map(token_value).collect();
                println!("{}", Value::Array(values));
            } else {
                let rows = list.iter().map(|t| {
                    [
                        t.token_id.clone(),
                        t.name.clone(),
                        roles_text(&t.roles),
                        if t.revoked { "revoked" } else { "active" }.to_owned(),
                        t.expires_at
                            .as_ref()
                            .map_or_else(|| "never".to_owned(), |e| render::time(Some(e))),
                    ]
                });
                print!(
                    "{}",
                    render::table(["TOKEN", "NAME", "ROLES", "STATE", "EXPIRES"], rows)
                );
            }
            Ok(())
        }
        Some("create") => {
            let name = args.required_positional("token name")?;
            let roles = args
                .values("role")?
                .iter()
                .map(|r| {
                    parse_role(r).map(|r| r as i32).ok_or_else(|| {
                        Failure::Usage(format!(
                            "--role {r:?}: one of viewer, operator, security-officer, admin"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let valid_days = args.parsed::<u32>("valid-days")?.unwrap_or(0);
            let tenant = args.value("for-tenant")?.unwrap_or_default();
            args.finish()?;
            let created = client(ctx)
                .create_token(ctx.request(CreateTokenRequest {
                    name,
                    roles,
                    valid_days,
                    tenant,
                })?)
                .await?
                .into_inner();
            let token = created.token.unwrap_or_default();
            if ctx.json {
                let mut value = token_value(&token);
                value["secret"] = Value::String(created.secret);
                println!("{value}");
            } else {
                eprintln!(
                    "token {} ({}) created; it is shown only now — keep it as a secret:",
                    token.token_id,
                    roles_text(&token.roles)
                );
                println!("{}", created.secret);
            }
            Ok(())
        }
        Some("revoke") => {
            let token_id = args.required_positional("token id")?;
            let reason = args.value("reason")?.unwrap_or_default();
            let tenant = args.value("for-tenant")?.unwrap_or_default();
            args.finish()?;
            let token = client(ctx)
                .revoke_token(ctx.request(RevokeTokenRequest {
                    token_id,
                    reason,
                    tenant,
                })?)
                .await?
                .into_inner();
            if ctx.json {
                println!("{}", token_value(&token));
            } else {
                println!("token {} revoked", token.token_id);
            }
            Ok(())
        }
        Some(other) => Err(Failure::Usage(format!(
            "tokens {other:?}: expected list, create or revoke"
        ))),
    }
}

/// `whoami`: the actor, tenant, roles and permissions the server sees.
pub async fn whoami(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    args.finish()?;
    let me = client(ctx)
        .who_am_i(ctx.request(WhoAmIRequest {})?)
        .await?
        .into_inner();
    if ctx.json {
        println!(
            "{}",
            json!({"actor": me.actor, "tenant": me.tenant, "roles": roles_text(&me.roles), "permissions": me.permissions})
        );
    } else {
        println!(
            "{} in tenant {} (roles: {}; may: {})",
            me.actor,
            me.tenant,
            roles_text(&me.roles),
            me.permissions.join(", ")
        );
    }
    Ok(())
}
