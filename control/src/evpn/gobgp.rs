//! GoBGP through its `gobgp` CLI (which speaks gRPC to `gobgpd`):
//!
//! ```text
//! gobgp -u HOST -p PORT global -j                            # our AS number
//! gobgp -u HOST -p PORT global rib -a evpn -j                # the EVPN RIB
//! gobgp ... global rib add -a evpn multicast LOCAL etag 0 rd LOCAL:VNI rt ASN:VNI
//!           encap vxlan pmsi ingress-repl VNI LOCAL nexthop LOCAL       # type 3
//! gobgp ... global rib add -a evpn macadv MAC 0.0.0.0 etag 0 label VNI rd LOCAL:VNI
//!           rt ASN:VNI encap vxlan nexthop LOCAL                        # type 2
//! gobgp ... global rib del -a evpn multicast IP etag E rd RD
//! gobgp ... global rib del -a evpn macadv MAC IP etag E label L rd RD
//! ```
//!
//! Adding a path for an NLRI that is already there replaces it. The CLI
//! rather than the gRPC API: it is what the Debian package ships, keeps the
//! agent free of a protobuf/gRPC stack, and a few process starts a second
//! are nothing next to BGP's own timers. Its one gap: it cannot attach the
//! MAC Mobility extended community (RFC 7432 §7.7) to a route.

use super::exec;
use super::model::{Advert, Nlri, Path};
use super::rib;
use serde_json::Value;
use std::net::IpAddr;
use std::time::Duration;

/// How to reach one gobgpd.
#[derive(Debug, Clone)]
pub struct Gobgp {
    /// The `gobgp` program.
    pub prog: String,
    pub host: String,
    pub port: u16,
    pub timeout: Duration,
}

impl Gobgp {
    fn run(&self, args: Vec<String>) -> Result<String, String> {
        let mut all = vec![
            "-u".to_string(),
            self.host.clone(),
            "-p".to_string(),
            self.port.to_string(),
        ];
        all.extend(args);
        exec::run(&self.prog, &all, self.timeout)
    }

    /// The speaker's AS number (`gobgp global -j`).
    pub fn asn(&self) -> Result<u32, String> {
        let out = self.run(words(&["global", "-j"]))?;
        let v: Value =
            serde_json::from_str(out.trim()).map_err(|e| format!("`gobgp global -j`: {e}"))?;
        v.get("asn")
            .or_else(|| v.get("as"))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n != 0)
            .ok_or_else(|| format!("`gobgp global -j` shows no AS number: {}", out.trim()))
    }

    /// The EVPN RIB; notes on skipped paths go with it.
    pub fn rib(&self) -> Result<(Vec<Path>, Vec<String>), String> {
        let out = self.run(words(&["global", "rib", "-a", "evpn", "-j"]))?;
        // gobgp prints "Network not in table" for an empty RIB.
        if out.trim_start().starts_with("Network not in table") {
            return Ok((Vec::new(), Vec::new()));
        }
        rib::parse(&out)
    }

    pub fn advertise(&self, a: &Advert) -> Result<(), String> {
        self.run(add_args(a)).map(drop)
    }

    pub fn withdraw(&self, nlri: &Nlri, label: u32) -> Result<(), String> {
        self.run(del_args(nlri, label)).map(drop)
    }
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

fn ip_or_zero(ip: &Option<IpAddr>) -> String {
    ip.map_or_else(|| "0.0.0.0".to_string(), |i| i.to_string())
}

/// `global rib add -a evpn ...` for one of our routes.
pub fn add_args(a: &Advert) -> Vec<String> {
    let mut v = words(&["global", "rib", "add", "-a", "evpn"]);
    match &a.nlri {
        Nlri::MacIp { rd, etag, mac, ip } => v.extend([
            "macadv".into(),
            mac.to_string(),
            ip_or_zero(ip),
            "etag".into(),
            etag.to_string(),
            "label".into(),
            a.label.to_string(),
            "rd".into(),
            rd.0.clone(),
        ]),
        Nlri::Imet { rd, etag, ip } => v.extend([
            "multicast".into(),
            ip.to_string(),
            "etag".into(),
            etag.to_string(),
            "rd".into(),
            rd.0.clone(),
        ]),
    }
    v.extend(["rt".into(), a.rt.clone(), "encap".into(), "vxlan".into()]);
    if let Nlri::Imet { .. } = a.nlri {
        v.extend([
            "pmsi".into(),
            "ingress-repl".into(),
            a.label.to_string(),
            a.nexthop.to_string(),
        ]);
    }
    v.extend(["nexthop".into(), a.nexthop.to_string()]);
    v
}

/// `global rib del -a evpn ...` for a route of ours.
pub fn del_args(nlri: &Nlri, label: u32) -> Vec<String> {
    let mut v = words(&["global", "rib", "del", "-a", "evpn"]);
    match nlri {
        Nlri::MacIp { rd, etag, mac, ip } => v.extend([
            "macadv".into(),
            mac.to_string(),
            ip_or_zero(ip),
            "etag".into(),
            etag.to_string(),
            "label".into(),
            label.to_string(),
            "rd".into(),
            rd.0.clone(),
        ]),
        Nlri::Imet { rd, etag, ip } => v.extend([
            "multicast".into(),
            ip.to_string(),
            "etag".into(),
            etag.to_string(),
            "rd".into(),
            rd.0.clone(),
        ]),
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn command_lines() {
        let l = Ipv4Addr::new(10, 0, 0, 1);
        let t3 = Advert::imet(65000, l, 100).unwrap();
        assert_eq!(
            add_args(&t3).join(" "),
            "global rib add -a evpn multicast 10.0.0.1 etag 0 rd 10.0.0.1:100 rt 65000:100 \
             encap vxlan pmsi ingress-repl 100 10.0.0.1 nexthop 10.0.0.1"
        );
        let t2 = Advert::mac(65000, l, 100, "02:00:00:00:00:01".parse().unwrap()).unwrap();
        assert_eq!(
            add_args(&t2).join(" "),
            "global rib add -a evpn macadv 02:00:00:00:00:01 0.0.0.0 etag 0 label 100 \
             rd 10.0.0.1:100 rt 65000:100 encap vxlan nexthop 10.0.0.1"
        );
        assert_eq!(
            del_args(&t2.nlri, 100).join(" "),
            "global rib del -a evpn macadv 02:00:00:00:00:01 0.0.0.0 etag 0 label 100 rd 10.0.0.1:100"
        );
        assert_eq!(
            del_args(&t3.nlri, 100).join(" "),
            "global rib del -a evpn multicast 10.0.0.1 etag 0 rd 10.0.0.1:100"
        );
    }
}
