//! Turning an `ExecRequest` into something that can be spawned: environment,
//! working directory, user, program lookup and rlimits, with the errors a
//! client sees when a command cannot start.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use relay_codec::payload::{ExecRequest, ExecRlimit};
use rustix::fs::Access;
use rustix::process::{Pid, Resource, Rlimit, Signal};

/// `PATH` for commands when the agent itself has none (as PID 1 in a VM).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `TERM` for tty commands when neither the request nor the agent sets one.
const DEFAULT_TERM: &str = "xterm-256color";

/// Exit code reported when the program does not exist.
pub(crate) const EXIT_NOT_FOUND: i32 = 127;
/// Exit code reported when a command cannot start for any other reason.
pub(crate) const EXIT_CANNOT_RUN: i32 = 126;
/// Exit code reported for a malformed request.
pub(crate) const EXIT_MALFORMED: i32 = 2;

/// Held for reading while a process is spawned with pipes and for writing
/// while a pty is opened: between `openpty` and marking its descriptors
/// close-on-exec, a concurrent spawn would leak the pty into an unrelated
/// process, which would keep the terminal open after its own process ended.
static SPAWN_LOCK: RwLock<()> = RwLock::new(());

/// Guard for spawning a process with pipes.
pub(crate) fn spawn_guard() -> RwLockReadGuard<'static, ()> {
    SPAWN_LOCK.read().unwrap_or_else(PoisonError::into_inner)
}

/// Guard for opening a pty.
pub(crate) fn openpty_guard() -> RwLockWriteGuard<'static, ()> {
    SPAWN_LOCK.write().unwrap_or_else(PoisonError::into_inner)
}

/// Why a command could not start. The text follows
/// `relay-agent: cannot run "CMD": ` in the client's stderr.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The program is not in `PATH`, or its path does not exist.
    #[error("No such file or directory")]
    NotFound,
    /// The program exists but cannot be executed (or is a directory).
    #[error("Permission denied")]
    NotExecutable,
    /// Looking at the program failed.
    #[error("{}", describe(source))]
    Program {
        /// The I/O error.
        source: io::Error,
    },
    /// Starting the process failed.
    #[error("{}", describe(source))]
    Spawn {
        /// The I/O error.
        source: io::Error,
    },
    /// The working directory cannot be used.
    #[error("working directory {cwd:?}: {}", describe(source))]
    Cwd {
        /// The requested directory.
        cwd: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The working directory is not a directory.
    #[error("working directory {cwd:?}: Not a directory")]
    CwdNotDirectory {
        /// The requested directory.
        cwd: String,
    },
    /// An `env` entry has no `=`.
    #[error("invalid environment entry {entry:?} (expected KEY=VALUE)")]
    BadEnv {
        /// The entry.
        entry: String,
    },
    /// The user is not in `/etc/passwd` and is not a number.
    #[error("unknown user {user:?}")]
    UnknownUser {
        /// The user asked for.
        user: String,
    },
    /// The group is not in `/etc/group` and is not a number.
    #[error("unknown group {group:?}")]
    UnknownGroup {
        /// The group asked for.
        group: String,
    },
    /// `tty` together with `user` (see the crate documentation).
    #[error("running as another user is not supported with tty")]
    TtyWithUser,
    /// An rlimit names no known resource.
    #[error("unknown rlimit resource {resource:?}")]
    UnknownRlimit {
        /// The name given.
        resource: String,
    },
    /// An rlimit's soft limit is above its hard limit.
    #[error("rlimit {resource}: soft limit {soft} is above hard limit {hard}")]
    RlimitOrder {
        /// The resource.
        resource: String,
        /// Soft limit.
        soft: u64,
        /// Hard limit.
        hard: u64,
    },
    /// Applying an rlimit failed.
    #[error("rlimit {resource}: {}", describe(source))]
    Rlimit {
        /// The resource.
        resource: String,
        /// The error.
        source: io::Error,
    },
    /// The agent already runs as many sessions as it may.
    #[error("too many sessions (at most {limit} at once)")]
    TooManySessions {
        /// The limit in force.
        limit: usize,
    },
    /// The pty could not be opened or the command not started in it.
    #[error("pty: {reason}")]
    Pty {
        /// What the pty library reported.
        reason: String,
    },
}

impl StartError {
    /// The exit code reported for this error: 127 for a missing program,
    /// 126 for everything else.
    pub(crate) fn exit_code(&self) -> i32 {
        match self {
            StartError::NotFound => EXIT_NOT_FOUND,
            StartError::Spawn { source } if source.kind() == io::ErrorKind::NotFound => {
                EXIT_NOT_FOUND
            }
            _ => EXIT_CANNOT_RUN,
        }
    }
}

/// An I/O error's text without the trailing ` (os error N)`.
pub(crate) fn describe(err: &io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => text[..at].to_owned(),
        _ => text,
    }
}

/// The user and group a command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunAs {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Name and home directory, when `/etc/passwd` knows the user.
    pub(crate) account: Option<(String, String)>,
}

/// One rlimit, checked and converted.
#[derive(Debug, Clone)]
pub(crate) struct Limit {
    name: String,
    resource: Resource,
    limit: Rlimit,
}

/// A request checked and resolved, ready to spawn.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The program's path (resolved through `PATH`).
    pub(crate) program: PathBuf,
    /// `argv[0]`: the name the client gave.
    pub(crate) argv0: String,
    pub(crate) args: Vec<String>,
    /// Variables set on top of the agent's environment, in order.
    pub(crate) env: Vec<(String, String)>,
    pub(crate) cwd: PathBuf,
    pub(crate) run_as: Option<RunAs>,
    pub(crate) limits: Vec<Limit>,
}

/// Checks a request and resolves everything that can fail before spawning.
pub(crate) fn prepare(req: &ExecRequest) -> Result<Prepared, StartError> {
    if req.tty && req.user.is_some() {
        return Err(StartError::TtyWithUser);
    }
    let mut requested = Vec::with_capacity(req.env.len());
    for entry in &req.env {
        match entry.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                requested.push((key.to_owned(), value.to_owned()));
            }
            _ => {
                return Err(StartError::BadEnv {
                    entry: entry.clone(),
                });
            }
        }
    }
    let run_as = match &req.user {
        Some(spec) => Some(lookup_user(
            spec,
            &read_or_empty("/etc/passwd"),
            &read_or_empty("/etc/group"),
        )?),
        None => None,
    };
    let limits = req
        .rlimits
        .iter()
        .map(parse_limit)
        .collect::<Result<Vec<_>, _>>()?;
    let cwd = match &req.cwd {
        Some(cwd) => check_cwd(cwd)?,
        None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
    };

    let is_set = |key: &str| requested.iter().any(|(k, _)| k == key);
    let mut env = Vec::new();
    if std::env::var_os("PATH").is_none() && !is_set("PATH") {
        env.push(("PATH".to_owned(), DEFAULT_PATH.to_owned()));
    }
    if req.tty && std::env::var_os("TERM").is_none() && !is_set("TERM") {
        env.push(("TERM".to_owned(), DEFAULT_TERM.to_owned()));
    }
    if let Some(RunAs {
        account: Some((name, home)),
        ..
    }) = &run_as
    {
        for (key, value) in [("HOME", home), ("USER", name), ("LOGNAME", name)] {
            if !is_set(key) {
                env.push((key.to_owned(), value.clone()));
            }
        }
    }
    env.extend(requested);

    let path_var = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| OsString::from(v))
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| DEFAULT_PATH.into());
    let program = resolve_program(&req.cmd, &path_var, &cwd)?;
    Ok(Prepared {
        program,
        argv0: req.cmd.clone(),
        args: req.args.clone(),
        env,
        cwd,
        run_as,
        limits,
    })
}

fn read_or_empty(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Checks the working directory and makes it absolute (relative to the
/// agent's own), so the program path resolved against it is absolute too.
fn check_cwd(cwd: &str) -> Result<PathBuf, StartError> {
    match std::fs::metadata(cwd) {
        Ok(meta) if meta.is_dir() => std::path::absolute(cwd).map_err(|source| StartError::Cwd {
            cwd: cwd.to_owned(),
            source,
        }),
        Ok(_) => Err(StartError::CwdNotDirectory {
            cwd: cwd.to_owned(),
        }),
        Err(source) => Err(StartError::Cwd {
            cwd: cwd.to_owned(),
            source,
        }),
    }
}

/// Finds the program as `execvp` would: a name with a slash is a path
/// (relative to `cwd`), any other name is looked up in `path_var`.
fn resolve_program(cmd: &str, path_var: &OsString, cwd: &Path) -> Result<PathBuf, StartError> {
    if cmd.is_empty() {
        return Err(StartError::NotFound);
    }
    if cmd.contains('/') {
        let path = cwd.join(cmd);
        return check_executable(&path).map(|()| path);
    }
    let mut not_executable = false;
    for dir in std::env::split_paths(path_var) {
        let candidate = cwd.join(dir).join(cmd);
        match check_executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(StartError::NotExecutable) => not_executable = true,
            Err(_) => {}
        }
    }
    Err(if not_executable {
        StartError::NotExecutable
    } else {
        StartError::NotFound
    })
}

fn check_executable(path: &Path) -> Result<(), StartError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(StartError::NotExecutable),
        Ok(_) => rustix::fs::access(path, Access::EXEC_OK).map_err(|_| StartError::NotExecutable),
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Err(StartError::NotFound)
        }
        Err(source) => Err(StartError::Program { source }),
    }
}

/// Resolves `user`, `uid`, `user:group` or `uid:gid` against the contents
/// of `/etc/passwd` and `/etc/group`. A numeric uid that has no passwd entry
/// runs with the same number as its gid.
pub(crate) fn lookup_user(spec: &str, passwd: &str, group: &str) -> Result<RunAs, StartError> {
    let (user, group_spec) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let entry = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let [name, _, uid, gid, _, home, ..] = fields[..] else {
            return None;
        };
        let (uid, gid) = (uid.parse::<u32>().ok()?, gid.parse::<u32>().ok()?);
        (name == user || user.parse() == Ok(uid))
            .then(|| (name.to_owned(), uid, gid, home.to_owned()))
    });
    let mut run_as = match (entry, user.parse::<u32>()) {
        (Some((name, uid, gid, home)), _) => RunAs {
            uid,
            gid,
            account: Some((name, home)),
        },
        (None, Ok(uid)) => RunAs {
            uid,
            gid: uid,
            account: None,
        },
        (None, Err(_)) => {
            return Err(StartError::UnknownUser {
                user: user.to_owned(),
            });
        }
    };
    if let Some(group_spec) = group_spec {
        let found = group.lines().find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse::<u32>().ok()?;
            (name == group_spec).then_some(gid)
        });
        run_as.gid = match (found, group_spec.parse::<u32>()) {
            (Some(gid), _) | (None, Ok(gid)) => gid,
            (None, Err(_)) => {
                return Err(StartError::UnknownGroup {
                    group: group_spec.to_owned(),
                });
            }
        };
    }
    Ok(run_as)
}

fn parse_limit(limit: &ExecRlimit) -> Result<Limit, StartError> {
    let name = limit.resource.to_ascii_lowercase();
    let name = name.strip_prefix("rlimit_").unwrap_or(&name).to_owned();
    let resource = match name.as_str() {
        "cpu" => Resource::Cpu,
        "fsize" => Resource::Fsize,
        "data" => Resource::Data,
        "stack" => Resource::Stack,
        "core" => Resource::Core,
        "rss" => Resource::Rss,
        "nproc" => Resource::Nproc,
        "nofile" => Resource::Nofile,
        "memlock" => Resource::Memlock,
        "as" => Resource::As,
        "locks" => Resource::Locks,
        "sigpending" => Resource::Sigpending,
        "msgqueue" => Resource::Msgqueue,
        "nice" => Resource::Nice,
        "rtprio" => Resource::Rtprio,
        "rttime" => Resource::Rttime,
        _ => {
            return Err(StartError::UnknownRlimit {
                resource: limit.resource.clone(),
            });
        }
    };
    if limit.soft > limit.hard {
        return Err(StartError::RlimitOrder {
            resource: name,
            soft: limit.soft,
            hard: limit.hard,
        });
    }
    // u64::MAX is RLIM_INFINITY, which rustix spells `None`.
    let value = |v: u64| (v != u64::MAX).then_some(v);
    Ok(Limit {
        name,
        resource,
        limit: Rlimit {
            current: value(limit.soft),
            maximum: value(limit.hard),
        },
    })
}

/// Applies the limits to a running process (see the crate documentation
/// for why this happens after `exec`).
pub(crate) fn apply_limits(pid: u32, limits: &[Limit]) -> Result<(), StartError> {
    let Some(pid) = to_pid(pid) else {
        return Ok(());
    };
    for limit in limits {
        rustix::process::prlimit(Some(pid), limit.resource, limit.limit).map_err(|errno| {
            StartError::Rlimit {
                resource: limit.name.clone(),
                source: errno.into(),
            }
        })?;
    }
    Ok(())
}

fn to_pid(pid: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(pid).ok()?)
}

/// Why a signal was not delivered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignalError {
    /// Not a named signal of this platform (or a realtime signal).
    #[error("signal {signal} is not supported")]
    Unsupported {
        /// The number asked for.
        signal: i32,
    },
    /// `kill` failed.
    #[error("{}", describe(source))]
    Kill {
        /// The error.
        source: io::Error,
    },
}

/// Sends `signal` to one process.
pub(crate) fn signal_process(pid: u32, signal: i32) -> Result<(), SignalError> {
    let sig = Signal::from_named_raw(signal).ok_or(SignalError::Unsupported { signal })?;
    let Some(pid) = to_pid(pid) else {
        return Ok(());
    };
    rustix::process::kill_process(pid, sig).map_err(|errno| SignalError::Kill {
        source: errno.into(),
    })
}

/// Sends `signal` to every process of group `pgid`.
pub(crate) fn signal_group(pgid: u32, signal: i32) -> Result<(), SignalError> {
    let sig = Signal::from_named_raw(signal).ok_or(SignalError::Unsupported { signal })?;
    let Some(pgid) = to_pid(pgid) else {
        return Ok(());
    };
    rustix::process::kill_process_group(pgid, sig).map_err(|errno| SignalError::Kill {
        source: errno.into(),
    })
}

/// The exit code of a finished process: its status, or 128 + the signal
/// that ended it.
pub(crate) fn exit_code(code: Option<i32>, signal: Option<i32>) -> i32 {
    match (code, signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => EXIT_CANNOT_RUN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                          broken line\n\
                          ann:x:1000:100::/home/ann:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:ann\nwheel:x:10:\n";

    #[test]
    fn a_user_name_resolves_to_its_uid_gid_and_home() {
        assert_eq!(
            lookup_user("ann", PASSWD, GROUP).unwrap(),
            RunAs {
                uid: 1000,
                gid: 100,
                account: Some(("ann".into(), "/home/ann".into())),
            }
        );
    }

    #[test]
    fn a_known_uid_resolves_like_its_name() {
        let by_uid = lookup_user("65534", PASSWD, GROUP).unwrap();
        assert_eq!(by_uid, lookup_user("nobody", PASSWD, GROUP).unwrap());
    }

    #[test]
    fn an_unknown_uid_runs_with_the_same_gid() {
        let run_as = lookup_user("4242", PASSWD, GROUP).unwrap();
        assert_eq!((run_as.uid, run_as.gid, run_as.account), (4242, 4242, None));
    }

    #[test]
    fn a_group_after_a_colon_replaces_the_primary_group() {
        assert_eq!(lookup_user("ann:wheel", PASSWD, GROUP).unwrap().gid, 10);
        assert_eq!(lookup_user("ann:77", PASSWD, GROUP).unwrap().gid, 77);
        assert!(matches!(
            lookup_user("ann:nogroup", PASSWD, GROUP),
            Err(StartError::UnknownGroup { .. })
        ));
    }

    #[test]
    fn an_unknown_user_name_is_an_error() {
        assert!(matches!(
            lookup_user("bob", PASSWD, GROUP),
            Err(StartError::UnknownUser { user }) if user == "bob"
        ));
    }

    #[test]
    fn rlimit_names_accept_the_kernel_spelling() {
        let limit = |resource: &str| ExecRlimit {
            resource: resource.into(),
            soft: 10,
            hard: 20,
        };
        assert_eq!(parse_limit(&limit("RLIMIT_NOFILE")).unwrap().name, "nofile");
        assert!(matches!(
            parse_limit(&limit("bogus")),
            Err(StartError::UnknownRlimit { .. })
        ));
        let inverted = ExecRlimit {
            resource: "nofile".into(),
            soft: 30,
            hard: 20,
        };
        assert!(matches!(
            parse_limit(&inverted),
            Err(StartError::RlimitOrder { .. })
        ));
    }

    #[test]
    fn io_errors_are_described_without_the_errno_suffix() {
        let err = io::Error::from_raw_os_error(2);
        assert_eq!(describe(&err), "No such file or directory");
    }

    #[test]
    fn a_missing_program_is_127_and_a_directory_is_126() {
        let path: OsString = "/usr/bin:/bin".into();
        let missing = resolve_program("surely-not-a-command", &path, Path::new("/")).unwrap_err();
        assert_eq!(missing.exit_code(), 127);
        let dir = resolve_program("/tmp", &path, Path::new("/")).unwrap_err();
        assert_eq!(dir.exit_code(), 126);
        assert!(resolve_program("sh", &path, Path::new("/")).is_ok());
    }
}
