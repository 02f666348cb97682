//! host-local's IPAM, in-process and on the same files: one file per reserved address under
//! `<dataDir>/<network>/` holding `<container id>\r\n<ifname>`, `last_reserved_ip.0` for
//! round-robin, and a `lock` file taken with flock around every change. So an agent upgraded from
//! the plugin binaries keeps its pods' addresses, and a restarted agent keeps them too.

use ipnet::Ipv4Net;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The network's directory, locked for as long as this lives.
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

fn ctx(e: io::Error, what: &str, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("failed to {what} {}: {e}", p.display()))
}

impl Store {
    /// Opens (creating it) and locks `<data_dir>/<network>`.
    pub fn lock(data_dir: &Path, network: &str) -> io::Result<Store> {
        let dir = data_dir.join(network);
        std::fs::create_dir_all(&dir).map_err(|e| ctx(e, "create", &dir))?;
        let lp = dir.join("lock");
        let lock = File::create(&lp).map_err(|e| ctx(e, "open", &lp))?;
        // SAFETY: flock on a descriptor we own; blocks until the other holder is done.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(ctx(io::Error::last_os_error(), "lock", &lp));
        }
        Ok(Store { dir, _lock: lock })
    }

    /// Every reservation: (address, container id).
    pub fn reserved(&self) -> Vec<(Ipv4Addr, String)> {
        std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        let ip: Ipv4Addr = e.file_name().to_str()?.parse().ok()?;
                        let text = std::fs::read_to_string(e.path()).ok()?;
                        let id = text.lines().next().unwrap_or("").trim().to_string();
                        Some((ip, id))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The address held by `id`, if any.
    pub fn of(&self, id: &str) -> Option<Ipv4Addr> {
        self.reserved()
            .into_iter()
            .find(|(_, i)| i == id)
            .map(|(ip, _)| ip)
    }

    /// Reserves the next free address of `subnet` after the last one handed out (host-local's
    /// round robin), never the network, gateway or broadcast address; `id` keeps the address
    /// it already has.
    pub fn allocate(
        &self,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
        id: &str,
        ifname: &str,
    ) -> io::Result<Ipv4Addr> {
        if let Some(ip) = self.of(id) {
            return Ok(ip);
        }
        let first = u32::from(subnet.network()) + 1;
        let last = u32::from(subnet.broadcast()).saturating_sub(1);
        if last < first {
            return Err(io::Error::other(format!(
                "pod CIDR {subnet} has no addresses for pods"
            )));
        }
        let taken: std::collections::BTreeSet<Ipv4Addr> =
            self.reserved().into_iter().map(|(ip, _)| ip).collect();
        let last_file = self.dir.join("last_reserved_ip.0");
        let after = std::fs::read_to_string(&last_file)
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|n| (first..=last).contains(n))
            .unwrap_or(last);
        let count = last - first + 1;
        for step in 1..=count {
            let n = first + (after - first + step) % count;
            let ip = Ipv4Addr::from(n);
            if ip == gateway || taken.contains(&ip) {
                continue;
            }
            let f = self.dir.join(ip.to_string());
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&f)
            {
                Ok(mut file) => {
                    use std::io::Write;
                    file.write_all(format!("{id}\r\n{ifname}").as_bytes())
                        .map_err(|e| ctx(e, "write", &f))?;
                    std::fs::write(&last_file, ip.to_string())
                        .map_err(|e| ctx(e, "write", &last_file))?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ctx(e, "create", &f)),
            }
        }
        Err(io::Error::other(format!(
            "no free address left in pod CIDR {subnet} ({} reserved in {})",
            taken.len(),
            self.dir.display()
        )))
    }

    /// Releases what `id` holds (nothing held is fine).
    pub fn release(&self, id: &str) -> io::Result<()> {
        for (ip, i) in self.reserved() {
            if i == id {
                let f = self.dir.join(ip.to_string());
                std::fs::remove_file(&f).map_err(|e| ctx(e, "remove", &f))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_robin_skips_gateway_and_keeps_an_ids_address() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::lock(d.path(), "kubenet").unwrap();
        let net: Ipv4Net = "10.9.0.0/29".parse().unwrap();
        let gw: Ipv4Addr = "10.9.0.1".parse().unwrap();
        let a = s.allocate(net, gw, "a", "eth0").unwrap();
        assert_eq!(a.to_string(), "10.9.0.2");
        assert_eq!(s.allocate(net, gw, "a", "eth0").unwrap(), a);
        let b = s.allocate(net, gw, "b", "eth0").unwrap();
        assert_eq!(b.to_string(), "10.9.0.3");
        s.release("a").unwrap();
        // round robin: the next one, not the freed one
        assert_eq!(
            s.allocate(net, gw, "c", "eth0").unwrap().to_string(),
            "10.9.0.4"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("kubenet/10.9.0.3")).unwrap(),
            "b\r\neth0"
        );
        for id in ["d", "e", "f"] {
            s.allocate(net, gw, id, "eth0").unwrap();
        }
        let e = s.allocate(net, gw, "g", "eth0").unwrap_err();
        assert!(e.to_string().contains("no free address"), "{e}");
        assert_eq!(
            s.of("d").map(|i| i.to_string()).as_deref(),
            Some("10.9.0.5")
        );
    }
}
