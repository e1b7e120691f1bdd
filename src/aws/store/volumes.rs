//! `VolumeStore` on S3: the app's volumes in one object,
//! `apps/APP/volumes.json`, changed by compare-and-swap (it goes with the
//! app's other objects when the app is destroyed).

use super::{store_err, S3Store};
use crate::store::{Result, StoreError, VolumeStore};
use crate::volumes::Volume;

fn key(app: &str) -> String {
    format!("apps/{app}/volumes.json")
}

fn busy(app: &str) -> StoreError {
    StoreError::Conflict(format!("the volumes of {app} keep changing; try again"))
}

#[async_trait::async_trait]
impl VolumeStore for S3Store {
    async fn volumes(&self, app: &str) -> Result<Vec<Volume>> {
        Ok(self
            .state
            .get_json(&key(app))
            .await
            .map_err(store_err)?
            .map(|(v, _)| v)
            .unwrap_or_default())
    }

    async fn add_volume(&self, app: &str, volume: &Volume) -> Result<()> {
        self.read_modify_write(
            &key(app),
            || Ok(Vec::<Volume>::new()),
            |all| {
                if all.iter().any(|v| v.name == volume.name) {
                    return Err(StoreError::Conflict(format!(
                        "{app} already has a volume named '{}'",
                        volume.name
                    )));
                }
                all.push(volume.clone());
                all.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(())
            },
            || busy(app),
        )
        .await
    }

    async fn remove_volume(&self, app: &str, name: &str) -> Result<()> {
        self.read_modify_write(
            &key(app),
            || Ok(Vec::<Volume>::new()),
            |all| {
                let before = all.len();
                all.retain(|v| v.name != name);
                if all.len() == before {
                    return Err(StoreError::NotFound(format!(
                        "{app} has no volume named '{name}'"
                    )));
                }
                Ok(())
            },
            || busy(app),
        )
        .await
    }
}
