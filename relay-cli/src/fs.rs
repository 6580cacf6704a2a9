//! `agent-relay fs`: files in the guest.

use std::path::PathBuf;

use relay_client::FsEntry;
use tokio::io::AsyncWriteExt;

use crate::SocketArgs;

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

pub(crate) async fn run(args: FsArgs) -> u8 {
    match fs(args).await {
        Ok(()) => 0,
        Err(error) => crate::fail(error),
    }
}

async fn fs(args: FsArgs) -> Result<(), Box<dyn std::error::Error>> {
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
        FsCommand::Get { remote, local } => match local.filter(|p| p.as_os_str() != "-") {
            Some(path) => {
                let file = tokio::fs::File::create(&path).await?;
                let mut file = tokio::io::BufWriter::new(file);
                fs.read_to(remote, &mut file).await?;
                file.flush().await?;
            }
            None => {
                let mut stdout = tokio::io::stdout();
                fs.read_to(remote, &mut stdout).await?;
                stdout.flush().await?;
            }
        },
        FsCommand::Put {
            local,
            remote,
            mode,
        } => {
            if local.as_os_str() == "-" {
                fs.write_from(remote, mode, tokio::io::stdin()).await?;
            } else {
                let file = tokio::fs::File::open(&local).await?;
                fs.write_from(remote, mode, file).await?;
            }
        }
        FsCommand::Mkdir { path } => fs.mkdir(path).await?,
        FsCommand::Rm { path } => fs.remove(path).await?,
        FsCommand::Rmdir { path } => fs.remove_dir(path).await?,
        FsCommand::Cp { src, dst } => fs.copy(src, dst).await?,
        FsCommand::Mv { src, dst } => fs.rename(src, dst).await?,
    }
    Ok(())
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
