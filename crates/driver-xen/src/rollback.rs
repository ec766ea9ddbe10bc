//! Undoing a failed attach, in one place: before its commit (release what was prepared), after
//! it (remove the nodes, put libxl's configuration back, release the loop device), and saying
//! what could not be undone.

use std::sync::atomic::Ordering;

use vdev_core::{DeviceRef, Domain, Error, Result};
use vdev_remote::HeldLock;

use crate::driver::Inner;
use crate::libxl::{ConfigOp, ConfigUpdate};
use crate::paths::Domid;
use crate::paths::{DevPaths, Kind};

/// An attach failed (`fail`) and undoing it failed too: what is left, and how to remove it.
pub(crate) fn rollback_failed(fail: Error, left: &[String], remedy: &str) -> Error {
    Error::backend(
        crate::NAME,
        format!(
            "{}; rollback failed, left: {}; {remedy}",
            describe(&fail),
            left.join("; ")
        ),
    )
}

/// An error in words for a longer message: a backend error's message and its source, without
/// the driver's name.
pub(crate) fn describe(e: &Error) -> String {
    match e {
        Error::Backend {
            message,
            source: Some(s),
            ..
        } => format!("{message}: {s}"),
        Error::Backend { message, .. } => message.clone(),
        e => e.to_string(),
    }
}

impl Inner {
    /// An attach failed before anything of the device was committed (`e`): release the loop
    /// device made for it (under the lock `held`, or taken now) and return `e`, or say what
    /// could not be undone (`config_left`: libxl's configuration not put back).
    pub(crate) async fn not_attached(
        &self,
        e: Error,
        loop_node: Option<&str>,
        held: Option<&HeldLock>,
        config_left: Option<String>,
    ) -> Error {
        let mut left: Vec<String> = config_left.into_iter().collect();
        if let Some(node) = loop_node {
            if let Err(le) = self.release_loop(node, held).await {
                left.push(format!(
                    "loop device {node} bound (releasing it failed: {})",
                    describe(&le)
                ));
            }
        }
        if left.is_empty() {
            e
        } else {
            rollback_failed(
                e,
                &left,
                "nothing of the device was written; release a loop device in Domain-0 with `losetup -d`",
            )
        }
    }

    /// Release a loop device made for a disk whose nodes are gone (or were never written),
    /// under the hotplug lock (`held`, or taken now).
    pub(crate) async fn release_loop(&self, node: &str, held: Option<&HeldLock>) -> Result<()> {
        match held {
            Some(_) => self.dom0_host.loop_detach(node).await,
            None => {
                let _lock = self.dom0_host.lock("block").await?;
                self.dom0_host.loop_detach(node).await
            }
        }
    }

    /// Put the document back as read (the XenStore transaction failed). On failure, what is
    /// left, in words.
    pub(crate) async fn undo_config(&self, u: &ConfigUpdate) -> std::result::Result<(), String> {
        if u.written.load(Ordering::SeqCst) {
            if let Err(e) = self.userdata().write(&u.files, &u.original).await {
                tracing::warn!(file = %u.files.data, "putting libxl's configuration back: {e}");
                return Err(format!(
                    "libxl's configuration {} as changed for the device (putting it back failed: {e})",
                    u.files.data
                ));
            }
        }
        Ok(())
    }

    /// Undo an attach whose nodes were committed and whose backend or hotplug then failed
    /// (`fail`): the script's work undone if it ran, the nodes removed (libxl's configuration
    /// changed back as `config` says), *then* the loop device released. `fail`, or what could
    /// not be undone with it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn roll_back_attached(
        &self,
        fail: Error,
        ran_script: bool,
        kind: Kind,
        domain: &Domain,
        backend: u32,
        devid: u32,
        reference: &DeviceRef,
        loop_node: Option<&str>,
        config: ConfigOp,
    ) -> Error {
        let left = self
            .undo_attached(ran_script, kind, domain, backend, devid, loop_node, config)
            .await;
        if left.is_empty() {
            return fail;
        }
        rollback_failed(
            fail,
            &left,
            &format!(
                "remove them with a forced detach (`vdev detach {} {} {reference} --force`)",
                domain.name,
                kind.device_type()
            ),
        )
    }

    /// [`Self::roll_back_attached`]'s work: what could not be undone, in words (empty when
    /// everything was).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn undo_attached(
        &self,
        ran_script: bool,
        kind: Kind,
        domain: &Domain,
        backend: u32,
        devid: u32,
        loop_node: Option<&str>,
        config: ConfigOp,
    ) -> Vec<String> {
        let paths = DevPaths::new(kind, domain.domid(), backend, devid);
        let mut left = Vec::new();
        if ran_script {
            if let Err(e) = self
                .run_hotplug(kind, &paths.backend, false, domain.domid(), devid)
                .await
            {
                tracing::warn!(be = %paths.backend, "{e}");
                left.push(format!("the hotplug script's work ({})", describe(&e)));
            }
        }
        match self
            .remove_dev(kind, domain.domid(), devid, Some(&paths.backend), config)
            .await
        {
            Ok(()) => {
                if let Some(node) = loop_node {
                    if let Err(e) = self.release_loop(node, None).await {
                        left.push(format!(
                            "loop device {node} bound (releasing it failed: {})",
                            describe(&e)
                        ));
                    }
                }
            }
            Err(e) => {
                // The nodes stay, so their loop device stays bound too.
                tracing::warn!(be = %paths.backend, "rolling back: {e}");
                left.push(format!(
                    "{}, {} and {} (removing them failed: {})",
                    paths.frontend,
                    paths.backend,
                    paths.libxl,
                    describe(&e)
                ));
                if let Some(node) = loop_node {
                    left.push(format!("loop device {node}, which they name"));
                }
            }
        }
        left
    }
}
