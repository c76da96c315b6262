//! Reading another process's memory (`process_vm_readv`), behind a trait so
//! the walkers can be tested on memory laid out by hand.

use super::PyError;

pub trait Memory {
    /// Fills `buf` from `addr` in the target, entirely or not at all.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PyError>;

    fn u64(&self, addr: u64) -> Result<u64, PyError> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }

    fn bytes(&self, addr: u64, len: usize) -> Result<Vec<u8>, PyError> {
        let mut v = vec![0u8; len];
        self.read(addr, &mut v)?;
        Ok(v)
    }
}

/// The memory of a live process.
#[derive(Debug, Clone, Copy)]
pub struct ProcMem {
    pub pid: u32,
}

impl Memory for ProcMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PyError> {
        if buf.is_empty() {
            return Ok(());
        }
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: buf.len(),
        };
        // SAFETY: `local` describes `buf`, which is valid for writes of its
        // length; the remote range is only read by the kernel.
        let n =
            unsafe { libc::process_vm_readv(self.pid as libc::pid_t, &local, 1, &remote, 1, 0) };
        if n < 0 {
            return Err(PyError::Read {
                addr,
                source: std::io::Error::last_os_error(),
            });
        }
        if n as usize != buf.len() {
            return Err(PyError::Read {
                addr,
                source: std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            });
        }
        Ok(())
    }
}

/// Memory laid out by hand: (address, bytes) regions.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct FakeMem {
    pub regions: Vec<(u64, Vec<u8>)>,
}

#[cfg(test)]
impl FakeMem {
    pub fn put(&mut self, addr: u64, bytes: &[u8]) {
        self.regions.push((addr, bytes.to_vec()));
    }
    pub fn put_u64(&mut self, addr: u64, v: u64) {
        self.put(addr, &v.to_ne_bytes());
    }
}

#[cfg(test)]
impl Memory for FakeMem {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), PyError> {
        // Byte by byte, newest region first: regions may overlap.
        for (i, b) in buf.iter_mut().enumerate() {
            let a = addr + i as u64;
            *b = self
                .regions
                .iter()
                .rev()
                .find(|(s, v)| a >= *s && a < s + v.len() as u64)
                .map(|(s, v)| v[(a - s) as usize])
                .ok_or(PyError::Read {
                    addr,
                    source: std::io::Error::from(std::io::ErrorKind::NotFound),
                })?;
        }
        Ok(())
    }
}
