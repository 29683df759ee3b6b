//! `tokens` (create, list, revoke API tokens; obtain a client certificate for mutual
//! TLS) and `whoami`; and where certctl finds its own token.

use std::path::PathBuf;

use certledger_domain::access::{parse_role, role_name};
use certledger_proto::auth::v1::token_service_client::TokenServiceClient;
use certledger_proto::auth::v1::{
    CreateTokenRequest, IssueClientCertificateRequest, ListTokensRequest, RevokeTokenRequest,
    Token, WhoAmIRequest,
};
use certledger_proto::common::v1::Role;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::args::Args;
use crate::{Ctx, Failure, render};

/// Where certd writes its first token (certd's default data directory).
const DEFAULT_TOKEN_FILE: &str = "./certledger-data/admin.token";

/// The token to send: `CERTLEDGER_TOKEN`, else the file `--token-file` /
/// `CERTLEDGER_TOKEN_FILE` names, else (with `use_default`) certd's default token file if
/// it exists.
pub fn find_token(
    token_file: Option<String>,
    use_default: bool,
) -> Result<Option<String>, Failure> {
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
            if !use_default || !default.exists() {
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
        "kind": if t.client_certificate.is_some() { "client-certificate" } else { "token" },
        "client_certificate": t.client_certificate.as_ref().map(|c| json!({
            "serial": c.serial,
            "sha256_fingerprint": c.sha256_fingerprint,
            "subject": c.subject,
        })),
    })
}

/// The roles of `--role` options.
fn roles(args: &mut Args) -> Result<Vec<i32>, Failure> {
    args.values("role")?
        .iter()
        .map(|r| {
            parse_role(r).map(|r| r as i32).ok_or_else(|| {
                Failure::Usage(format!(
                    "--role {r:?}: one of viewer, operator, security-officer, admin"
                ))
            })
        })
        .collect()
}

/// Writes `contents` to a new file `path` (refusing to overwrite one), mode 0600 when
/// `secret`.
fn write_new(path: &str, contents: &str, secret: bool) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| Failure::Other(format!("creating {path}: {e}")))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| Failure::Other(format!("writing {path}: {e}")))
}

/// `tokens client-cert NAME --role R… --cert-out F --key-out F [--ca-out F]`: a key
/// generated here, a CSR sent, the certificate and key written.
async fn client_cert(ctx: &Ctx, args: &mut Args) -> Result<(), Failure> {
    let name = args.required_positional("certificate name")?;
    let roles = roles(args)?;
    let valid_days = args.parsed::<u32>("valid-days")?.unwrap_or(0);
    let tenant = args.value("for-tenant")?.unwrap_or_default();
    let cert_out = args
        .value("cert-out")?
        .ok_or_else(|| Failure::Usage("--cert-out FILE is required".into()))?;
    let key_out = args
        .value("key-out")?
        .ok_or_else(|| Failure::Usage("--key-out FILE is required".into()))?;
    let ca_out = args.value("ca-out")?;
    args.finish()?;
    for path in [Some(&cert_out), Some(&key_out), ca_out.as_ref()]
        .into_iter()
        .flatten()
    {
        if std::path::Path::new(path).exists() {
            return Err(Failure::Usage(format!(
                "{path} exists; it is not overwritten"
            )));
        }
    }
    let key = rcgen::KeyPair::generate()
        .map_err(|e| Failure::Other(format!("generating the key: {e}")))?;
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|params| params.serialize_request(&key))
        .and_then(|csr| csr.pem())
        .map_err(|e| Failure::Other(format!("making the CSR: {e}")))?;
    let issued = client(ctx)
        .issue_client_certificate(ctx.request(IssueClientCertificateRequest {
            name,
            roles,
            valid_days,
            tenant,
            csr_pem: csr,
        })?)
        .await?
        .into_inner();
    write_new(&key_out, &key.serialize_pem(), true)?;
    write_new(&cert_out, &issued.certificate_pem, false)?;
    if let Some(ca_out) = &ca_out {
        write_new(ca_out, &issued.ca_certificate_pem, false)?;
    }
    let token = issued.token.unwrap_or_default();
    if ctx.json {
        let mut value = token_value(&token);
        value["cert_file"] = Value::String(cert_out);
        value["key_file"] = Value::String(key_out);
        println!("{value}");
    } else {
        println!(
            "client certificate {} ({}) written to {cert_out}, its key to {key_out} (0600); use them with --cert {cert_out} --key {key_out}",
            token.token_id,
            roles_text(&token.roles)
        );
    }
    Ok(())
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
            let roles = roles(args)?;
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
                let kind = if token.client_certificate.is_some() {
                    "client certificate"
                } else {
                    "token"
                };
                println!("{kind} {} revoked", token.token_id);
            }
            Ok(())
        }
        Some("client-cert") => client_cert(ctx, args).await,
        Some(other) => Err(Failure::Usage(format!(
            "tokens {other:?}: expected list, create, revoke or client-cert"
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
