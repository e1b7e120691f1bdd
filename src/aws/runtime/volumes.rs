//! The app's volumes on aws: one EFS file system per volume, in a stack of
//! its own (`lifecycle::ensure_volume`), mounted into the task definitions
//! of the volume's types (and of every one-off and timer). The rack alone
//! maps a volume name to its file system (by the app's own stack name), so
//! no setting lets one app mount another's.

use std::collections::BTreeMap;

use super::AwsRuntime;
use crate::aws::ecs::task_definition::EfsMount;
use crate::aws::{lifecycle, Result};
use crate::progress::Progress;
use crate::runtime::ReleaseSpec;

impl AwsRuntime {
    /// The EFS mounts of a task of `kind` (`None`: a one-off or timer,
    /// which mounts every volume of the app), making the file systems on
    /// first use.
    pub(super) async fn efs_mounts(
        &self,
        spec: &ReleaseSpec,
        kind: Option<&str>,
        progress: &Progress,
    ) -> Result<Vec<EfsMount>> {
        let mut mounts = Vec::new();
        for v in &spec.volumes {
            if kind.is_some_and(|k| !v.types.iter().any(|t| t == k)) {
                continue;
            }
            let fs = lifecycle::ensure_volume(&self.ctx, &self.rack, &spec.app, &v.name, progress)
                .await?;
            mounts.push(EfsMount {
                name: v.name.clone(),
                file_system_id: fs,
                path: v.path.clone(),
            });
        }
        Ok(mounts)
    }

    /// EFS meters usage itself (`describe-file-systems`); the rack does not
    /// read it yet.
    pub(super) async fn volume_sizes_inner(
        &self,
        _app: &str,
        names: &[String],
    ) -> Result<BTreeMap<String, Option<u64>>> {
        Ok(names.iter().map(|n| (n.clone(), None)).collect())
    }

    pub(super) async fn destroy_volume_inner(&self, app: &str, name: &str) -> Result<()> {
        lifecycle::destroy_volume(&self.ctx, app, name, &Progress::discard()).await?;
        Ok(())
    }
}
