//! The ACME client side (RFC 8555), over instant-acme: the rack's account
//! and one order for one host, its HTTP-01 challenge answered by the
//! router (`router::Tls::add_challenge`) while the order runs.
//!
//! It knows nothing of the store: the account's credentials go in and out
//! as JSON text for the caller to seal.

use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, Problem, RetryPolicy,
};
use serde::{Deserialize, Serialize};

use crate::config::Acme as AcmeSettings;
use crate::router::Tls;

/// How long the ACME server gets to validate and to issue. Let's Encrypt
/// takes seconds; a server that takes longer is retried later.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// The account as the store keeps it (sealed): which directory it is for,
/// so a changed `[acme] directory` makes a new account.
#[derive(Serialize, Deserialize)]
struct Saved {
    directory: String,
    credentials: AccountCredentials,
}

fn builder(cfg: &AcmeSettings) -> Result<instant_acme::AccountBuilder, String> {
    match &cfg.ca_bundle {
        Some(path) => Account::builder_with_root(path)
            .map_err(|e| format!("acme.ca_bundle {}: {e}", path.display())),
        None => Account::builder().map_err(|e| format!("the system's TLS roots: {e}")),
    }
}

/// The rack's account: restored from `saved` when it is for the configured
/// directory, else registered anew. Returns the credentials to save when
/// they are new.
pub async fn account(
    cfg: &AcmeSettings,
    saved: Option<&str>,
) -> Result<(Account, Option<String>), String> {
    let saved: Option<Saved> = saved.and_then(|s| serde_json::from_str(s).ok());
    if let Some(s) = saved.filter(|s| s.directory == cfg.directory) {
        let account = builder(cfg)?
            .from_credentials(s.credentials)
            .await
            .map_err(|e| format!("restoring the ACME account: {e}"))?;
        return Ok((account, None));
    }
    let contact = cfg.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder(cfg)?
        .create(&new, cfg.directory.clone(), None)
        .await
        .map_err(|e| format!("registering with {}: {e}", cfg.directory))?;
    let text = serde_json::to_string(&Saved {
        directory: cfg.directory.clone(),
        credentials,
    })
    .map_err(|e| format!("saving the ACME account: {e}"))?;
    Ok((account, Some(text)))
}

/// Orders a certificate for `host`, answering its HTTP-01 challenge
/// through `tls` for as long as the order runs. Returns the PEM chain and
/// the PEM private key.
pub async fn issue(account: &Account, host: &str, tls: &Tls) -> Result<(String, String), String> {
    let mut tokens = Vec::new();
    let result = order(account, host, tls, &mut tokens).await;
    for t in &tokens {
        tls.remove_challenge(t);
    }
    result
}

async fn order(
    account: &Account,
    host: &str,
    tls: &Tls,
    tokens: &mut Vec<String>,
) -> Result<(String, String), String> {
    let ids = [Identifier::Dns(host.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    let mut auths = order.authorizations();
    while let Some(a) = auths.next().await {
        let mut a = a.map_err(|e| format!("authorization: {e}"))?;
        match a.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            s => return Err(format!("the authorization for {host} is {s:?}")),
        }
        let mut ch = a
            .challenge(ChallengeType::Http01)
            .ok_or_else(|| "the ACME server offers no http-01 challenge".to_string())?;
        if !tls.add_challenge(&ch.token, ch.key_authorization().as_str()) {
            return Err("too many ACME challenges pending".into());
        }
        tokens.push(ch.token.clone());
        ch.set_ready()
            .await
            .map_err(|e| format!("challenge: {e}"))?;
    }
    let retry = RetryPolicy::new().timeout(ORDER_TIMEOUT);
    let status = order
        .poll_ready(&retry)
        .await
        .map_err(|e| format!("validation of {host}: {e}"))?;
    if status != OrderStatus::Ready {
        return Err(why_invalid(&mut order, host).await);
    }
    let key_pem = order
        .finalize()
        .await
        .map_err(|e| format!("finalize: {e}"))?;
    let chain = order
        .poll_certificate(&retry)
        .await
        .map_err(|e| format!("certificate: {e}"))?;
    Ok((chain, key_pem))
}

/// The ACME server's reason an order went invalid (the failed challenge's
/// error), as one line.
async fn why_invalid(order: &mut instant_acme::Order, host: &str) -> String {
    let mut auths = order.authorizations();
    while let Some(Ok(mut a)) = auths.next().await {
        if let Ok(state) = a.refresh().await {
            for c in &state.challenges {
                if let Some(p) = &c.error {
                    return format!("validation of {host} failed: {}", problem(p));
                }
            }
        }
    }
    format!("validation of {host} failed")
}

fn problem(p: &Problem) -> String {
    let detail = p.detail.as_deref().unwrap_or("no detail");
    let line: String = detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    match p.r#type.as_deref() {
        Some(t) => format!("{line} ({})", t.rsplit(':').next().unwrap_or(t)),
        None => line,
    }
}
