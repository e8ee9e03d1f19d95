//! `plant auth`: log in to identity and keep the tokens for this broker endpoint.
//!
//! `login` asks identity for a token pair and saves it in the credentials file (0600, one login
//! per endpoint; `worker_sdk::auth::credentials`); every later command sends the access token and
//! refreshes it when it is about to expire. `logout` ends the session at identity and forgets it;
//! `whoami` shows who the token is and what it may do; `token` prints the access token, for
//! scripts (`curl -H "Authorization: Bearer $(plant auth token)"`).

use std::io::{BufRead, IsTerminal, Write};

use clap::{Args, Subcommand};
use plantd_worker_sdk::auth::credentials::{Credential, CredentialStore};
use serde_json::json;

use super::identity;
use crate::context::{Access, Context};
use crate::error::CliError;
use crate::{output, session};

/// Options of `plant auth`.
#[derive(Args, Debug, Clone)]
pub struct AuthArgs {
    #[command(subcommand)]
    pub command: AuthCommand,
}

/// `plant auth` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum AuthCommand {
    /// Log in and save the tokens for this endpoint.
    Login {
        /// Username or email (asked for when omitted on a terminal).
        #[arg(long, short = 'u')]
        user: Option<String>,
        /// Read the password from the first line of stdin instead of asking.
        #[arg(long)]
        password_stdin: bool,
    },
    /// End the session at identity and forget the saved tokens.
    Logout,
    /// Show who the current token belongs to and what it grants.
    Whoami,
    /// Print the current access token (refreshed if it was about to expire).
    Token,
}

/// Runs `plant auth ...`.
pub fn run(ctx: &Context, args: AuthArgs) -> Result<(), CliError> {
    match args.command {
        AuthCommand::Login {
            user,
            password_stdin,
        } => login(ctx, user, password_stdin),
        AuthCommand::Logout => logout(ctx),
        AuthCommand::Whoami => {
            let token = require_token(ctx)?;
            let data = identity::call(
                ctx,
                "auth",
                "validate",
                json!({"token": token}),
                Access::Read,
            )?;
            if data["valid"] == json!(false) {
                let code = data["code"].as_str().unwrap_or("UNAUTHENTICATED");
                let message = data["message"].as_str().unwrap_or("the token is not valid");
                return Err(CliError::Input(format!("{code}: {message}")));
            }
            output::print_json(&data)
        }
        AuthCommand::Token => {
            let token = require_token(ctx)?;
            println!("{token}");
            Ok(())
        }
    }
}

fn require_token(ctx: &Context) -> Result<String, CliError> {
    session::token(ctx)?.ok_or_else(|| {
        CliError::Input(format!(
            "not logged in to {}: run `plant auth login`",
            ctx.endpoint
        ))
    })
}

fn login(ctx: &Context, user: Option<String>, password_stdin: bool) -> Result<(), CliError> {
    let interactive = std::io::stdin().is_terminal();
    let user = match user {
        Some(user) => user,
        None if interactive && !password_stdin => prompt("Username: ")?,
        None => return Err(CliError::Input("--user is required".into())),
    };
    let password = if password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else if interactive {
        rpassword::prompt_password("Password: ")?
    } else {
        return Err(CliError::Input(
            "no terminal to ask for the password: use --password-stdin".into(),
        ));
    };
    let data = identity::call(
        ctx,
        "auth",
        "login",
        json!({"identifier": user, "password": password}),
        Access::Write,
    )?;
    let credential = Credential::from_login_reply(&data, &user).ok_or_else(|| {
        CliError::Input(format!(
            "{} sent an unexpected login reply",
            identity::IDENTITY_SERVICE
        ))
    })?;
    let mut store = CredentialStore::load_default().map_err(|e| CliError::Input(e.to_string()))?;
    let username = credential.username.clone();
    store
        .set(&ctx.endpoint, credential)
        .map_err(|e| CliError::Input(e.to_string()))?;
    eprintln!(
        "logged in to {} as {username}; tokens saved in {}",
        ctx.endpoint,
        store.path().display()
    );
    Ok(())
}

fn logout(ctx: &Context) -> Result<(), CliError> {
    let mut store = CredentialStore::load_default().map_err(|e| CliError::Input(e.to_string()))?;
    let token = match ctx.token.clone() {
        Some(token) => token,
        None => match store.get(&ctx.endpoint) {
            Some(saved) => saved.access_token.clone(),
            None => {
                return Err(CliError::Input(format!(
                    "not logged in to {}",
                    ctx.endpoint
                )))
            }
        },
    };
    // End the session at identity first; forget it locally even if identity refuses (an
    // expired token's session is over anyway).
    let ended = identity::call(
        ctx,
        "auth",
        "logout",
        json!({"token": token}),
        Access::Write,
    );
    store
        .remove(&ctx.endpoint)
        .map_err(|e| CliError::Input(e.to_string()))?;
    match ended {
        Ok(_) => {
            eprintln!("logged out of {}", ctx.endpoint);
            Ok(())
        }
        Err(e) => Err(CliError::Input(format!(
            "saved tokens removed, but identity did not end the session: {e}"
        ))),
    }
}

fn prompt(question: &str) -> Result<String, CliError> {
    let mut stderr = std::io::stderr();
    stderr.write_all(question.as_bytes())?;
    stderr.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_owned())
}
