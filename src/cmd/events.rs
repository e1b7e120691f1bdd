//! `events`: the audit trail, filtered to what the caller may see.

use serde_json::json;

use super::{output::Output, CmdError, Ctx};

pub async fn list<R>(
    ctx: &Ctx<'_, R>,
    app: Option<&str>,
    limit: usize,
) -> Result<Output, CmdError> {
    let events = ctx
        .rack
        .provider
        .store
        .events(app, ctx.who.visible_apps(), limit)
        .await?;
    let items = events
        .into_iter()
        .map(|e| {
            json!({
                "id": e.id,
                "time": e.time,
                "actor": e.actor,
                "app": e.app,
                "action": e.action,
                "outcome": e.outcome,
            })
        })
        .collect();
    Ok(Output::list(
        &[
            ("TIME", "time"),
            ("WHO", "actor"),
            ("APP", "app"),
            ("ACTION", "action"),
            ("OUTCOME", "outcome"),
        ],
        items,
    ))
}
