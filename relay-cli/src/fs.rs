//! `agent-relay fs`: files in the guest, with a progress bar for large
//! transfers when stderr is a terminal.

use std::path::PathBuf;
use std::time::Duration;

use relay_client::{ClientError, Fs, FsEntry};

use crate::SocketArgs;
use crate::progress::{self, Progress};

/// Arguments of `fs`.
#[derive(Debug, clap::Args)]
pub(crate) struct FsArgs {
    #[command(flatten)]
    socket: SocketArgs,
    #[command(subcommand)]
    op: FsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum FsCommand {
    /// Show a path's kind, size, mode and modification time.
    Stat {
        /// Path in the guest.
        path: String,
    },
    /// List a directory.
    Ls {
        /// Directory in the guest.
        path: String,
    },
    /// Copy a guest file to a local file, or to stdout with `-` or no LOCAL.
    Get {
        /// File in the guest.
        remote: String,
        /// Local destination.
        local: Option<PathBuf>,
    },
    /// Copy a local file (or stdin with `-`) to the guest.
    Put {
        /// Local source, `-` for stdin.
        local: PathBuf,
        /// Destination in the guest.
        remote: String,
        /// Permission bits of a new file, in octal.
        #[arg(long, value_parser = parse_mode)]
        mode: Option<u32>,
    },
    /// Create a directory and its parents.
    Mkdir {
        /// Directory in the guest.
        path: String,
    },
    /// Remove a file.
    Rm {
        /// File in the guest.
        path: String,
    },
    /// Remove a directory and everything under it.
    Rmdir {
        /// Directory in the guest.
        path: String,
    },
    /// Copy a file within the guest.
    Cp {
        /// Source in the guest.
        src: String,
        /// Destination in the guest.
        dst: String,
    },
    /// Rename or move a path within the guest.
    Mv {
        /// Source in the guest.
        src: String,
        /// Destination in the guest.
        dst: String,
    },
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8).map_err(|e| format!("not an octal mode: {e}"))
}

pub(crate) async fn run(args: FsArgs, quiet: bool) -> u8 {
    match fs(args, quiet).await {
        Ok(()) => 0,
        Err(error) => crate::fail(error),
    }
}

async fn fs(args: FsArgs, quiet: bool) -> Result<(), Box<dyn std::error::Error>> {
    let client = args.socket.connect().await?;
    let fs = client.fs();
    match args.op {
        FsCommand::Stat { path } => {
            let entry = fs.stat(path).await?;
            println!("{}", describe(&entry));
        }
        FsCommand::Ls { path } => {
            for entry in fs.list(path).await? {
                println!("{}", describe(&entry));
            }
        }
        FsCommand::Get { remote, local } => {
            let progress = remote_progress(&fs, &remote, quiet).await;
            let result = match local.filter(|p| p.as_os_str() != "-") {
                Some(path) => {
                    let file = tokio::fs::File::create(&path).await?;
                    let file = tokio::io::BufWriter::new(file);
                    fs.read_to(remote, progress.counting(file)).await
                }
                None => {
                    let stdout = tokio::io::stdout();
                    fs.read_to(remote, progress.counting(stdout)).await
                }
            };
            progress.finish(result)?;
        }
        FsCommand::Put {
            local,
            remote,
            mode,
        } => {
            let result = if local.as_os_str() == "-" {
                let progress = Progress::new(None, quiet, "put");
                let stdin = progress.counting(tokio::io::stdin());
                progress.finish(fs.write_from(remote, mode, stdin).await)
            } else {
                let file = tokio::fs::File::open(&local).await?;
                let size = file.metadata().await?.len();
                let progress = Progress::new(Some(size), quiet, &file_name(&remote));
                let file = progress.counting(file);
                progress.finish(fs.write_from(remote, mode, file).await)
            };
            result?;
        }
        FsCommand::Mkdir { path } => fs.mkdir(path).await?,
        FsCommand::Rm { path } => fs.remove(path).await?,
        FsCommand::Rmdir { path } => fs.remove_dir(path).await?,
        FsCommand::Cp { src, dst } => copy(&fs, src, dst, quiet).await?,
        FsCommand::Mv { src, dst } => fs.rename(src, dst).await?,
    }
    Ok(())
}

/// How often `cp` looks at the size of its destination for the bar.
const COPY_POLL: Duration = Duration::from_millis(250);

/// Copies within the guest. The copy is one request whose bytes never pass
/// through here; its bar follows the destination's size, read with `stat`
/// on the same connection while the copy runs.
async fn copy(fs: &Fs, src: String, dst: String, quiet: bool) -> Result<(), ClientError> {
    let mut progress = remote_progress(fs, &src, quiet).await;
    if !progress.may_show() {
        return fs.copy(src, dst).await;
    }
    let copy = fs.copy(src, dst.clone());
    tokio::pin!(copy);
    let mut poll = tokio::time::interval(COPY_POLL);
    let result = loop {
        tokio::select! {
            result = &mut copy => break result,
            _ = poll.tick() => {
                // The destination may not exist yet; the next look will tell.
                if let Ok(entry) = fs.stat(dst.clone()).await {
                    progress.set_position(entry.size);
                }
            }
        }
    };
    progress.finish(result)
}

/// The progress of moving guest file `path`, sized by its `stat` (asked
/// only when a bar could be shown at all).
async fn remote_progress(fs: &Fs, path: &str, quiet: bool) -> Progress {
    if !progress::allowed(quiet) {
        return Progress::hidden();
    }
    // Without a size (the stat failed), the transfer itself reports the
    // error; a spinner meanwhile does no harm.
    let size = fs.stat(path).await.ok().map(|entry| entry.size);
    Progress::new(size, quiet, &file_name(path))
}

/// The last component of a guest path, to label its bar.
fn file_name(path: &str) -> String {
    match path.rsplit('/').next() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => path.to_owned(),
    }
}

/// One line per entry: kind, mode, size, modification time, path.
fn describe(entry: &FsEntry) -> String {
    let modified = entry
        .modified
        .map_or_else(|| "-".to_owned(), |t| t.to_string());
    format!(
        "{:<7} {:04o} {:>12} {:>11} {}",
        entry.kind, entry.mode, entry.size, modified, entry.path
    )
}
