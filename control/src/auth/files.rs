//! The state dir's files on disk: a private directory, reads that name the file in their errors, and
//! atomic private writes.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::{io_err, AuthError, StateDir};

impl StateDir {
    pub(super) fn ensure_dir(&self) -> Result<(), AuthError> {
        fs::create_dir_all(&self.path).map_err(io_err("create", &self.path))?;
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", &self.path))
    }

    pub(super) fn read(&self, name: &str) -> Result<String, AuthError> {
        let p = self.file(name);
        match fs::read_to_string(&p) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(AuthError::NotInitialised(self.path.clone()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(AuthError::Corrupt {
                path: p,
                reason: "not UTF-8 text".into(),
            }),
            Err(e) => Err(io_err("read", &p)(e)),
        }
    }

    /// The file's bytes, or None if it does not exist (any other read error is an error).
    pub(super) fn read_optional(&self, name: &str) -> Result<Option<Vec<u8>>, AuthError> {
        let p = self.file(name);
        match fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &p)(e)),
        }
    }

    pub(super) fn read_cert(&self, name: &str) -> Result<CertificateDer<'static>, AuthError> {
        let pem = self.read(name)?;
        CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| AuthError::Corrupt {
            path: self.file(name),
            reason: e.to_string(),
        })
    }

    /// Atomic replace: a temp file created with `O_EXCL` and mode 0600 (a leftover from a crash is
    /// removed first; `O_EXCL` refuses to follow a planted symlink), written and fsynced, renamed over
    /// `name`, then the directory fsynced so the rename itself survives a crash.
    pub(super) fn write(&self, name: &str, data: &[u8]) -> Result<(), AuthError> {
        self.write_batch(&[(name, data)])
    }

    /// [`Self::write`] for several files with one directory fsync: every temp file is written and
    /// fsynced first (if any of them fails, they are all removed and no file is replaced), then each is
    /// renamed over its file in order, then the directory is fsynced once. Each file is replaced
    /// atomically and all of them are durable when this returns; a crash before then may keep any
    /// subset of the renames, so a file whose presence means the others are complete (`node.crt`)
    /// goes in a later batch.
    pub(super) fn write_batch(&self, files: &[(&str, &[u8])]) -> Result<(), AuthError> {
        let mut temps = Vec::with_capacity(files.len());
        let staged = files.iter().try_for_each(|(name, data)| {
            let tmp = self.file(&format!(".{name}.tmp"));
            let r = self.stage(&tmp, data);
            temps.push(tmp);
            r
        });
        if staged.is_err() {
            for tmp in &temps {
                let _ = fs::remove_file(tmp);
            }
            return staged;
        }
        for (i, ((name, _), tmp)) in files.iter().zip(&temps).enumerate() {
            let p = self.file(name);
            if let Err(e) = fs::rename(tmp, &p) {
                for t in &temps[i..] {
                    let _ = fs::remove_file(t);
                }
                return Err(io_err("rename into", &p)(e));
            }
        }
        fs::File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync directory", &self.path))
    }

    /// Write `data` to the fresh temp file `tmp` (see [`Self::write`]) and fsync it.
    fn stage(&self, tmp: &Path, data: &[u8]) -> Result<(), AuthError> {
        match fs::remove_file(tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove stale", tmp)(e)),
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tmp)
            .map_err(io_err("create", tmp))?;
        // The mode above is filtered by the umask; make it exact.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err("chmod", tmp))?;
        f.write_all(data).map_err(io_err("write", tmp))?;
        f.sync_all().map_err(io_err("sync", tmp))
    }
}
