//! Envelope encryption with a KMS data key: config versions (and any other
//! secret the rack keeps in its bucket, such as the SSH host key).
//!
//! Sealing asks KMS for a fresh 256-bit data key (`GenerateDataKey` under
//! the rack's key), encrypts the payload with XChaCha20-Poly1305 under it,
//! and stores the KMS-encrypted data key beside the ciphertext:
//!
//! ```text
//! "RKE1" | u32 BE length of the encrypted data key | encrypted data key
//!        | 24-byte nonce | AEAD ciphertext (payload + 16-byte tag)
//! ```
//!
//! The context pairs (for config: `rack`, `app`, `version`) are both the
//! KMS encryption context (the data key decrypts only with them) and the
//! AEAD's associated data, so an envelope moved to another app or version
//! fails to open. The plaintext data key lives only for the call.
//!
//! A config version's payload is whatever the store hands over (the S3
//! store seals its already master-key-sealed values a second time, so a
//! config version in the bucket needs both KMS and the master key).

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use super::{AwsContext, AwsError, Result};

const MAGIC: &[u8; 4] = b"RKE1";

fn associated_data(context: &[(&str, String)]) -> Vec<u8> {
    let mut aad = b"rack-envelope-v1\0".to_vec();
    for (k, v) in context {
        aad.extend_from_slice(k.as_bytes());
        aad.push(b'=');
        aad.extend_from_slice(v.as_bytes());
        aad.push(0);
    }
    aad
}

fn open_error(context: &[(&str, String)]) -> AwsError {
    let what: Vec<String> = context.iter().map(|(k, v)| format!("{k} {v}")).collect();
    AwsError::Invalid(format!(
        "cannot decrypt the sealed data of {}: it was altered, moved, or sealed under another key",
        what.join(", ")
    ))
}

/// Seals `plaintext` under a fresh data key of `key_arn`, bound to `context`.
pub async fn seal_bytes(
    ctx: &AwsContext,
    key_arn: &str,
    context: &[(&str, String)],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let mut req = ctx
        .kms
        .generate_data_key()
        .key_id(key_arn)
        .key_spec(DataKeySpec::Aes256);
    for (k, v) in context {
        req = req.encryption_context(*k, v.clone());
    }
    let out = req
        .send()
        .await
        .map_err(|e| AwsError::api("KMS.GenerateDataKey", e))?;
    let (Some(key), Some(edk)) = (out.plaintext(), out.ciphertext_blob()) else {
        return Err(AwsError::Invalid(
            "KMS GenerateDataKey returned no key".into(),
        ));
    };
    let cipher = XChaCha20Poly1305::new_from_slice(key.as_ref())
        .map_err(|_| AwsError::Invalid("KMS returned a data key of the wrong size".into()))?;
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let aad = associated_data(context);
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| AwsError::Invalid("encryption failed".into()))?;
    let edk = edk.as_ref();
    let mut out = Vec::with_capacity(4 + 4 + edk.len() + 24 + ct.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(edk.len() as u32).to_be_bytes());
    out.extend_from_slice(edk);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens what [`seal_bytes`] sealed with the same `context`.
pub async fn open_bytes(
    ctx: &AwsContext,
    context: &[(&str, String)],
    sealed: &[u8],
) -> Result<Vec<u8>> {
    let err = || open_error(context);
    if sealed.len() < 8 || &sealed[..4] != MAGIC {
        return Err(err());
    }
    let n = u32::from_be_bytes(sealed[4..8].try_into().expect("4 bytes")) as usize;
    let rest = &sealed[8..];
    if rest.len() < n + 24 + 16 {
        return Err(err());
    }
    let (edk, rest) = rest.split_at(n);
    let (nonce, ct) = rest.split_at(24);
    let mut req = ctx.kms.decrypt().ciphertext_blob(Blob::new(edk.to_vec()));
    for (k, v) in context {
        req = req.encryption_context(*k, v.clone());
    }
    let out = req.send().await.map_err(|e| {
        let e = AwsError::api("KMS.Decrypt", e);
        // A wrong context shows as InvalidCiphertextException: say what
        // it means here.
        if e.code() == Some("InvalidCiphertextException") {
            err()
        } else {
            e
        }
    })?;
    let key = out
        .plaintext()
        .ok_or_else(|| AwsError::Invalid("KMS Decrypt returned no key".into()))?;
    let cipher = XChaCha20Poly1305::new_from_slice(key.as_ref()).map_err(|_| err())?;
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: &associated_data(context),
            },
        )
        .map_err(|_| err())
}

fn config_context(ctx: &AwsContext, app: &str, version: i64) -> [(&'static str, String); 4] {
    [
        ("purpose", "config".to_string()),
        ("rack", ctx.rack.clone()),
        ("app", app.to_string()),
        ("version", version.to_string()),
    ]
}

/// Seals the payload of one config version of `app` under a fresh data
/// key of the rack's key, bound to the rack, app and version.
pub async fn seal_config(
    ctx: &AwsContext,
    key_arn: &str,
    app: &str,
    version: i64,
    payload: &[u8],
) -> Result<Vec<u8>> {
    seal_bytes(ctx, key_arn, &config_context(ctx, app, version), payload).await
}

/// Opens a config version sealed by [`seal_config`] for the same app and
/// version; anything else fails.
pub async fn open_config(
    ctx: &AwsContext,
    app: &str,
    version: i64,
    sealed: &[u8],
) -> Result<Vec<u8>> {
    open_bytes(ctx, &config_context(ctx, app, version), sealed).await
}

#[cfg(test)]
mod tests;
