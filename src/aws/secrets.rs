//! Rack-wide secrets (`rack/NAME.sealed` in the bucket, e.g. the master
//! key and the SSH host key): [`super::state`]'s objects holding
//! [`super::envelope`]s, so reading one takes both S3 and KMS.

use super::state::S3State;
use super::{envelope, AwsError, Result};

/// A rack-wide secret (`rack/NAME.sealed`, e.g. the SSH host key), sealed
/// with a KMS data key of `key_arn` and bound to the rack and `name`. The
/// first call stores what `create` makes (If-None-Match: when two rack
/// instances start at once, one wins and both use its secret); later calls
/// return the stored one, so a replaced instance keeps its identity.
pub async fn load_or_create_secret(
    state: &S3State,
    key_arn: &str,
    name: &str,
    create: impl FnOnce() -> Vec<u8>,
) -> Result<Vec<u8>> {
    let key = format!("rack/{name}.sealed");
    let context = [
        ("purpose", name.to_string()),
        ("rack", state.ctx.rack.clone()),
    ];
    if let Some((sealed, _)) = state.get_bytes(&key).await? {
        return envelope::open_bytes(&state.ctx, &context, &sealed).await;
    }
    let secret = create();
    let sealed = envelope::seal_bytes(&state.ctx, key_arn, &context, &secret).await?;
    match state.put_bytes(&key, sealed, None).await {
        Ok(_) => Ok(secret),
        Err(e) if e.is_precondition_failed() => {
            let (sealed, _) = state
                .get_bytes(&key)
                .await?
                .ok_or_else(|| AwsError::NotFound(format!("{key} vanished")))?;
            envelope::open_bytes(&state.ctx, &context, &sealed).await
        }
        Err(e) => Err(e),
    }
}
