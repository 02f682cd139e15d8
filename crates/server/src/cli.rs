//! The `admin` and `sim` subcommands.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use audin_protocol::Untrusted;

use crate::config::{AdminCommand, ServeArgs, SimCommand};
use crate::db;
use crate::sip::trunk::Secret;
use crate::store::{self, CallStore};

/// Runs an `admin` subcommand against the configured store (SQLite or
/// PostgreSQL alike).
pub fn admin(args: &ServeArgs, action: AdminCommand) -> Result<()> {
    let database = args.database();
    // One short-lived runtime: the store's interface is async.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let store = store::open(&database).await?;
            admin_on(store.as_ref(), action).await
        })
}

/// Runs an `admin` subcommand against `store`.
pub async fn admin_on(store: &dyn CallStore, action: AdminCommand) -> Result<()> {
    match action {
        AdminCommand::CreateAccount { name } => {
            let id = store.create_account(&name).await?;
            let key = store.create_api_key(&id, "").await?;
            println!("account {id}");
            println!("api key {key}");
            println!("(the key is shown once; store it now)");
        }
        AdminCommand::CreateKey { account } => {
            let key = store.create_api_key(&account, "").await?;
            println!("api key {key}");
            println!("(the key is shown once; store it now)");
        }
        AdminCommand::AddNumber {
            account,
            number,
            name,
            trunk,
        } => {
            if let Err(e) = audin_protocol::validate_e164(&number) {
                bail!("{}: {e}", Untrusted(&number));
            }
            let id = store
                .add_number(&account, &number, &name, trunk.as_deref())
                .await
                .with_context(|| format!("adding {number} to {}", Untrusted(&account)))?;
            match trunk {
                Some(t) => println!("number {id} {number} {name} trunk {t}"),
                None => println!("number {id} {number} {name}"),
            }
        }
        AdminCommand::AddTrunk {
            account,
            name,
            uri,
            transport,
            username,
            password,
            allow,
            register,
            inbound_auth,
        } => {
            let trunk = db::NewTrunk {
                name,
                uri,
                transport: transport.into(),
                username,
                // Wrapped at once: a `Secret` cannot be printed.
                password: password.map(Secret::new),
                allowed_sources: allow,
                register,
                inbound_auth,
            };
            // The server would refuse to start with it: refuse it now.
            if trunk.register && trunk.username.is_none() {
                return Err(crate::sip::trunk::TrunkConfigError::RegisterWithoutCredentials.into());
            }
            let id = store.add_trunk(&account, &trunk).await.with_context(|| {
                format!(
                    "adding trunk {} to {}",
                    Untrusted(&trunk.name),
                    Untrusted(&account)
                )
            })?;
            // Checked by add_trunk: safe to echo. Never the password.
            println!(
                "trunk {id} {} {} {}{}",
                trunk.name,
                trunk.uri,
                trunk.transport.as_str(),
                if trunk.inbound_auth {
                    " inbound-auth"
                } else {
                    ""
                }
            );
        }
        AdminCommand::SetDialing {
            account,
            allow_prefix,
            any_destination,
            max_outbound_calls,
            no_call_limit,
        } => {
            // clap lets neither pair through together, and at least one
            // setting through: `None` leaves a setting as it is.
            let change = db::DialingChange {
                allowed_prefixes: (any_destination || !allow_prefix.is_empty())
                    .then_some(allow_prefix),
                max_outbound_calls: if no_call_limit {
                    Some(None)
                } else {
                    max_outbound_calls.map(Some)
                },
            };
            let policy = store
                .set_dialing(&account, &change)
                .await
                .with_context(|| format!("setting the dialling of {}", Untrusted(&account)))?;
            // Checked by set_dialing: an existing account id, safe to echo.
            println!("account {account}  dialling  {policy}");
            println!("(the running server applies it from the next dial)");
        }
        AdminCommand::List => print!("{}", store.admin_listing().await?),
    }
    Ok(())
}

/// Runs a `sim` subcommand against a running server.
pub fn sim(action: SimCommand) -> Result<()> {
    match action {
        SimCommand::Call {
            server,
            from,
            to,
            behaviour,
        } => {
            let mut body = serde_json::json!({ "from": from, "to": to });
            if let Some(b) = behaviour {
                body["behaviour"] = serde_json::Value::String(b);
            }
            let (status, text) = http(&server, "POST", "/dev/sim/calls", &body.to_string())?;
            if status != 200 {
                bail!("server answered {status}: {text}");
            }
            let v: serde_json::Value = serde_json::from_str(&text).context("answer is not JSON")?;
            let sid = v["callSid"].as_str().unwrap_or_default();
            println!("{sid}");
            // The server answers 200 even when nobody is online and free on
            // `to`: it ends the call `rejected` before answering (the caller
            // hears busy). Without this note a newcomer sees a call sid and
            // no ringing. A failed look-up only loses the note. `to` is
            // E.164 here (the server refuses anything else), safe to echo.
            if let Ok((200, text)) = http(&server, "GET", &format!("/dev/sim/calls/{sid}"), "")
                && let Ok(s) = serde_json::from_str::<serde_json::Value>(&text)
                && s["state"] == "ended"
                && s["endReason"] == "rejected"
            {
                eprintln!(
                    "note: {sid} was rejected at once: nobody is online and free on {to}, \
                     so the caller hears busy.\n\
                     hint: go online on {to} first (demo page: List numbers, Go online \
                     with that number selected), then call again."
                );
            }
        }
    }
    Ok(())
}

/// A minimal HTTP/1.1 request with a JSON body (plain `http://` only; the
/// CLI talks to a local dev server).
fn http(base: &str, method: &str, path: &str, body: &str) -> Result<(u16, String)> {
    let rest = base
        .strip_prefix("http://")
        .context("--server must be an http:// URL")?;
    let host = rest.split('/').next().unwrap_or(rest);
    let addr = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let mut stream = TcpStream::connect(&addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    stream.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").context("malformed answer")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed status line")?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
