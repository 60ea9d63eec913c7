//! API keys over `/_/api/v1/keys`: `keys create`, `keys list`, `keys
//! revoke` (all need an admin key).
//!
//! Owns: their flags and human views. May call: [`super::client`]. Must
//! never write a new key anywhere but stdout: it is shown once and corefn
//! keeps only its hash, so where it goes is the user's choice.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{segment, ClientError};
use super::table::Table;
use super::{cell, time_cell, Exit, Target};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// A new key; its secret is printed once, alone on stdout.
    Create(CreateArgs),
    /// Every key: id, scopes, dates (never the secret).
    List(ListArgs),
    /// Revoke a key: it stops working within milliseconds.
    Revoke(RevokeArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// What the key may do; repeatable.
    #[arg(long = "scope", required = true, value_parser = ["admin", "deploy", "invoke"])]
    pub scopes: Vec<String>,
    /// Limit an invoke key to this function; repeatable.
    #[arg(long = "function")]
    pub functions: Vec<String>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Clone, Args)]
pub struct RevokeArgs {
    /// The key's id, as `keys list` shows it.
    pub id: String,
    #[command(flatten)]
    pub target: Target,
}

pub fn run(command: &KeysCommand) -> Result<Exit, ClientError> {
    match command {
        KeysCommand::Create(args) => create(args),
        KeysCommand::List(args) => list(args),
        KeysCommand::Revoke(args) => revoke(args),
    }
}

fn create(args: &CreateArgs) -> Result<Exit, ClientError> {
    let mut body = json!({ "scopes": args.scopes });
    if !args.functions.is_empty() {
        body["functions"] = json!(args.functions);
    }
    let answer = args.target.client()?.api("POST", "keys", Some(&body))?;
    if args.target.json {
        super::out_json(&answer);
        return Ok(Exit::Ok);
    }
    // The secret alone on stdout, so `KEY=$(corefn keys create …)` works.
    super::out(&format!("{}\n", cell(&answer["key"])));
    let scopes = answer["scopes"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    eprintln!(
        "key {} ({scopes}{}): shown once; corefn keeps only its hash",
        cell(&answer["id"]),
        if args.functions.is_empty() {
            String::new()
        } else {
            format!("; only for {}", args.functions.join(", "))
        }
    );
    Ok(Exit::Ok)
}

fn list(args: &ListArgs) -> Result<Exit, ClientError> {
    let answer = args.target.client()?.api("GET", "keys", None)?;
    if args.target.json {
        super::out_json(&answer);
        return Ok(Exit::Ok);
    }
    let mut table = Table::new(&["ID", "SCOPES", "CREATED", "REVOKED"]);
    let empty = Vec::new();
    for key in answer["keys"].as_array().unwrap_or(&empty) {
        table.row(vec![
            cell(&key["id"]),
            key["scopes"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
            time_cell(&key["created"]),
            time_cell(&key["revoked"]),
        ]);
    }
    super::out(&table.render());
    Ok(Exit::Ok)
}

fn revoke(args: &RevokeArgs) -> Result<Exit, ClientError> {
    let answer =
        args.target
            .client()?
            .api("DELETE", &format!("keys/{}", segment(&args.id)), None)?;
    if args.target.json {
        super::out_json(&answer);
    } else {
        super::out(&format!("key {} revoked\n", args.id));
    }
    Ok(Exit::Ok)
}
