//! `AppStore` on S3: the app's head object holds its settings and domain
//! list; `domains/HOST.json` claims a host for one app.

use super::{store_err, S3Store};
use crate::aws::state::{delete_app_objects, Head};
use crate::aws::AwsError;
use crate::store::{AppRecord, AppSettings, AppStore, Result, StoreError};

fn app_record(h: &Head) -> AppRecord {
    AppRecord {
        name: h.app.clone(),
        created_at: h.created_at.clone(),
        settings: h.settings.clone(),
    }
}

fn claim_key(host: &str) -> String {
    format!("domains/{host}.json")
}

impl S3Store {
    /// Claims `host` for `app` (If-None-Match); a claim the app already
    /// holds is fine, another app's is a Conflict.
    async fn claim_domain(&self, app: &str, host: &str) -> Result<()> {
        let claim = claim_key(host);
        match self
            .state
            .put_json(&claim, &serde_json::json!({ "app": app }), None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_precondition_failed() => {
                let owner = self
                    .state
                    .get_json::<serde_json::Value>(&claim)
                    .await
                    .map_err(store_err)?
                    .and_then(|(v, _)| v["app"].as_str().map(str::to_string))
                    .unwrap_or_default();
                if owner != app {
                    return Err(StoreError::Conflict(format!(
                        "{host} is already a domain of app '{owner}'"
                    )));
                }
                Ok(())
            }
            Err(e) => Err(store_err(e)),
        }
    }
}

#[async_trait::async_trait]
impl AppStore for S3Store {
    async fn create_app(&self, name: &str) -> Result<AppRecord> {
        let app = AppRecord::new(name);
        let head = Head {
            app: app.name.clone(),
            created_at: app.created_at.clone(),
            ..Head::default()
        };
        match self.state.create_head(&head).await {
            Ok(_) => Ok(app),
            Err(AwsError::Conflict(_)) => {
                Err(StoreError::Conflict(format!("app '{name}' already exists")))
            }
            Err(e) => Err(store_err(e)),
        }
    }

    async fn get_app(&self, name: &str) -> Result<Option<AppRecord>> {
        Ok(self
            .state
            .head(name)
            .await
            .map_err(store_err)?
            .map(|(h, _)| app_record(&h)))
    }

    async fn app(&self, name: &str) -> Result<AppRecord> {
        Ok(app_record(&self.head(name).await?))
    }

    async fn list_apps(&self) -> Result<Vec<AppRecord>> {
        let mut out = Vec::new();
        for name in self.app_names().await? {
            if let Some(a) = self.get_app(&name).await? {
                out.push(a);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn set_app_settings(&self, name: &str, settings: &AppSettings) -> Result<()> {
        self.update_head(name, |h| h.settings = settings.clone())
            .await
    }

    async fn delete_app(&self, name: &str) -> Result<()> {
        let head = self.head(name).await?;
        // First: should the rest fail, no key keeps a scope over a name
        // that may be created again.
        self.unscope_app(name).await?;
        for host in &head.domains {
            // Best effort: the app goes regardless (a claim left behind keeps
            // naming the deleted app until removed by hand).
            let _ = self.delete_object(claim_key(host)).await;
        }
        delete_app_objects(&self.state.ctx, &self.state.bucket, name)
            .await
            .map(|_| ())
            .map_err(store_err)
    }

    async fn domains(&self, app: &str) -> Result<Vec<String>> {
        Ok(self.head(app).await?.domains)
    }

    async fn add_domain(&self, app: &str, host: &str) -> Result<()> {
        self.head(app).await?;
        self.claim_domain(app, host).await?;
        self.update_head(app, |h| {
            if !h.domains.iter().any(|d| d == host) {
                h.domains.push(host.to_string());
            }
        })
        .await
    }

    async fn remove_domain(&self, app: &str, host: &str) -> Result<()> {
        let h = self.head(app).await?;
        if !h.domains.iter().any(|d| d == host) {
            return Err(StoreError::NotFound(format!(
                "{host} is not a domain of app '{app}'"
            )));
        }
        self.update_head(app, |h| h.domains.retain(|d| d != host))
            .await?;
        self.delete_object(claim_key(host)).await
    }
}
