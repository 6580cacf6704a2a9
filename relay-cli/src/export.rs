//! `serve --metrics-file`: the relay's statistics as Prometheus text (see
//! [`crate::metrics`]) in a file rewritten every interval, the form node
//! exporter's textfile collector reads (`--collector.textfile.directory`).
//!
//! Each write goes to a hidden temporary file beside the target (no `.prom`
//! suffix, so the collector never reads it half-written) and is renamed
//! over it. The file is removed when `serve` stops, so a stopped relay
//! leaves no stale figures behind.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use relay_server::StatsHandle;
use tokio::task::JoinHandle;

/// Why the metrics file could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExportError {
    /// The path names no file (it ends in `/` or `..`).
    #[error("{path}: not a file name", path = path.display())]
    NotAFile {
        /// The `--metrics-file` given.
        path: PathBuf,
    },
    /// The statistics did not serialise (never expected).
    #[error("cannot serialise the statistics: {0}")]
    Serialise(#[from] serde_json::Error),
    /// Writing the temporary file or renaming it failed.
    #[error("cannot write {path}: {source}", path = path.display())]
    Write {
        /// The file that could not be written or renamed.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// A metrics file kept up to date; [`MetricsFile::stop`] removes it.
#[derive(Debug)]
pub(crate) struct MetricsFile {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl MetricsFile {
    /// Writes `path` once now (so a bad path is an error at startup), then
    /// again every `interval`.
    pub(crate) async fn start(
        path: &Path,
        interval: Duration,
        stats: StatsHandle,
    ) -> Result<MetricsFile, ExportError> {
        let target = Target::new(path)?;
        target.write(&stats).await?;
        let task = tokio::spawn(refresh(target, interval, stats));
        Ok(MetricsFile {
            path: path.to_owned(),
            task,
        })
    }

    /// Stops refreshing and removes the file.
    pub(crate) async fn stop(self) {
        self.task.abort();
        // A refresh cut short may have left its temporary file.
        let _ = self.task.await;
        if let Ok(target) = Target::new(&self.path) {
            let _ = tokio::fs::remove_file(&target.temporary).await;
        }
        if let Err(error) = tokio::fs::remove_file(&self.path).await {
            tracing::debug!(%error, "the metrics file was already gone");
        }
    }
}

/// The file and its temporary twin.
#[derive(Debug)]
struct Target {
    path: PathBuf,
    temporary: PathBuf,
}

impl Target {
    fn new(path: &Path) -> Result<Target, ExportError> {
        let names_a_directory = path.as_os_str().as_bytes().ends_with(b"/");
        let Some(name) = path.file_name().filter(|_| !names_a_directory) else {
            return Err(ExportError::NotAFile {
                path: path.to_owned(),
            });
        };
        let mut hidden = std::ffi::OsString::from(".");
        hidden.push(name);
        hidden.push(".tmp");
        Ok(Target {
            path: path.to_owned(),
            temporary: path.with_file_name(hidden),
        })
    }

    async fn write(&self, stats: &StatsHandle) -> Result<(), ExportError> {
        let text = crate::metrics::render(&serde_json::to_value(stats.stats())?);
        let failed = |path: &Path| {
            let path = path.to_owned();
            move |source| ExportError::Write { path, source }
        };
        tokio::fs::write(&self.temporary, text)
            .await
            .map_err(failed(&self.temporary))?;
        let renamed = tokio::fs::rename(&self.temporary, &self.path).await;
        if renamed.is_err() {
            let _ = tokio::fs::remove_file(&self.temporary).await;
        }
        renamed.map_err(failed(&self.path))
    }
}

async fn refresh(target: Target, interval: Duration, stats: StatsHandle) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate, and `start` has just written.
    tick.tick().await;
    let mut failing = false;
    loop {
        tick.tick().await;
        match target.write(&stats).await {
            // Said once when it starts failing and once when it recovers,
            // not at every interval.
            Err(error) if !failing => {
                tracing::warn!(%error, "metrics file not updated");
                failing = true;
            }
            Err(_) => {}
            Ok(()) if failing => {
                tracing::info!(path = %target.path.display(), "metrics file updated again");
                failing = false;
            }
            Ok(()) => {}
        }
    }
}
