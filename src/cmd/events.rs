//! `events`: the audit trail, filtered to what the caller may see.

use serde_json::json;

use super::group::read;
use super::{output::Output, CmdError, Ctx};
use super::{parse_count, usage, Access, Args};
use crate::names::{printable, validate_app};

pub async fn list<R>(
    ctx: &Ctx<'_, R>,
    app: Option<&str>,
    limit: usize,
) -> Result<Output, CmdError> {
    let events = ctx
        .store()
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

// ---------------------------------------------------------------- commands

commands! {
    /// `events [APP] [-n N]`: anyone may list, filtered to what they may see.
    EventsCmd(ctx) {
        "events" => List { app: Option<String>, limit: usize }
            parse parse_events;
            access match app {
                None => Access::Anyone,
                Some(app) => read(app),
            };
            app app;
            run list(ctx, app.as_deref(), limit);
    }
}

/// `events [APP] [-n N]`.
fn parse_events(a: &mut Args, _cmd: &str) -> Result<(Option<String>, usize), CmdError> {
    let mut app = None;
    let mut limit = 50;
    let rest = a.rest();
    let mut it = rest.into_iter();
    while let Some(w) = it.next() {
        if w == "-n" {
            let n = it.next().ok_or_else(|| usage("-n needs a number"))?;
            limit = parse_count(&n)?;
        } else if let Some(n) = w.strip_prefix("-n") {
            limit = parse_count(n)?;
        } else if app.is_none() {
            validate_app(&w).map_err(CmdError::Usage)?;
            app = Some(w);
        } else {
            return Err(usage(format!("unexpected argument '{}'", printable(&w))));
        }
    }
    Ok((app, limit))
}
