//! `ResourceStore` on S3: one object per resource,
//! `resources/NAME.json` (the password inside sealed), links inside it,
//! changed by compare-and-swap.

use super::{store_err, S3Store};
use crate::store::{ResourceRecord, ResourceStore, Result, StoreError};

fn key(name: &str) -> String {
    format!("resources/{name}.json")
}

fn not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("no resource named '{name}'"))
}

#[async_trait::async_trait]
impl ResourceStore for S3Store {
    async fn create_resource(&self, r: &ResourceRecord) -> Result<()> {
        match self.state.put_json(&key(&r.name), r, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_precondition_failed() => Err(StoreError::Conflict(format!(
                "resource '{}' already exists",
                r.name
            ))),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn resource(&self, name: &str) -> Result<ResourceRecord> {
        self.state
            .get_json(&key(name))
            .await
            .map_err(store_err)?
            .map(|(r, _)| r)
            .ok_or_else(|| not_found(name))
    }

    async fn resources(&self) -> Result<Vec<ResourceRecord>> {
        let keys = self
            .state
            .list("resources/", None)
            .await
            .map_err(store_err)?;
        let mut out = Vec::new();
        for k in keys {
            if let Some(name) = k
                .strip_prefix("resources/")
                .and_then(|k| k.strip_suffix(".json"))
            {
                match self.resource(name).await {
                    Ok(r) => out.push(r),
                    Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    async fn set_resource_link(
        &self,
        name: &str,
        app: &str,
        prefix: Option<&str>,
    ) -> Result<ResourceRecord> {
        self.read_modify_write(
            &key(name),
            || Err::<ResourceRecord, _>(not_found(name)),
            |r| {
                match prefix {
                    Some(p) => r.links.insert(app.to_string(), p.to_string()),
                    None => r.links.remove(app),
                };
                Ok(())
            },
            || StoreError::Conflict(format!("resource {name} keeps changing; try again")),
        )
        .await?;
        self.resource(name).await
    }

    async fn delete_resource(&self, name: &str) -> Result<()> {
        let r = self.resource(name).await?;
        if let Some(app) = r.links.keys().next() {
            return Err(StoreError::Refused(format!(
                "{name} is linked to {app}: resources:unlink {name} {app} first"
            )));
        }
        self.delete_object(key(name)).await
    }
}
