//! Private temporary directories, removed when the test drops them.

/// A temporary directory, removed with everything in it when dropped.
pub use tempfile::TempDir;

/// A fresh private directory under the system's temporary directory, short
/// enough to hold Unix socket paths.
pub fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("relay-test-")
        .tempdir()
        .expect("a temporary directory")
}
