//! `vswitchctl fdb-show`, streamed: the daemon's answer is read row by row
//! from the socket, never held whole. A bridge with a million stations
//! answers with about 100 MB of JSON; parsed into a `serde_json::Value` tree
//! that took the client about 1 GiB and 15 s.
//!
//! - `--json`: the result array is re-indented and copied to stdout as it
//!   arrives (serde-transcode: deserializer events straight into a pretty
//!   serializer), in constant memory.
//! - Table: every row is kept in 24 bytes (port and VTEP names interned, MAC
//!   parsed), because column widths need all rows before the first line.

use dataplane::MacAddr;
use serde::de::{DeserializeSeed, Deserializer, Error as _, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};

/// Copies the result, pretty-printed, to stdout.
pub struct PrettyToStdout;

impl<'de> DeserializeSeed<'de> for PrettyToStdout {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let mut w = io::BufWriter::new(io::stdout().lock());
        let mut ser = serde_json::Serializer::pretty(&mut w);
        serde_transcode::transcode(d, &mut ser).map_err(D::Error::custom)?;
        w.write_all(b"\n")
            .and_then(|()| w.flush())
            .map_err(D::Error::custom)
    }
}

/// One row as the daemon sends it.
#[derive(Deserialize)]
struct Line {
    mac: MacAddr,
    vlan: u16,
    port: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    age_s: u64,
    #[serde(default)]
    vtep: Option<String>,
}

const NO_VTEP: u32 = u32::MAX;

/// One row as the table keeps it.
struct Row {
    mac: MacAddr,
    vlan: u16,
    is_static: bool,
    port: u32,
    vtep: u32,
    /// Seconds (ageing times are at most 1e6 s; clamped, never wrapped).
    age_s: u32,
}

/// Names seen in the rows, each kept once.
#[derive(Default)]
struct Names {
    index: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    fn id(&mut self, name: String) -> u32 {
        if let Some(&i) = self.index.get(&name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.clone());
        self.index.insert(name, i);
        i
    }
}

/// The rows of an `fdb-show` answer, compact.
#[derive(Default)]
pub struct FdbTable {
    rows: Vec<Row>,
    names: Names,
}

impl<'de> DeserializeSeed<'de> for FdbTable {
    type Value = FdbTable;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<FdbTable, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FdbTable {
    type Value = FdbTable;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of FDB entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<FdbTable, A::Error> {
        while let Some(l) = seq.next_element::<Line>()? {
            let port = self.names.id(l.port);
            let vtep = l.vtep.map_or(NO_VTEP, |v| self.names.id(v));
            self.rows.push(Row {
                mac: l.mac,
                vlan: l.vlan,
                is_static: l.kind == "static",
                port,
                vtep,
                age_s: u32::try_from(l.age_s).unwrap_or(u32::MAX),
            });
        }
        Ok(self)
    }
}

impl FdbTable {
    fn cells(&self, r: &Row, vtep: bool) -> [String; 6] {
        [
            self.names.names[r.port as usize].clone(),
            r.vlan.to_string(),
            r.mac.to_string(),
            if r.is_static { "static" } else { "dynamic" }.into(),
            if r.is_static {
                "-".into()
            } else {
                r.age_s.to_string()
            },
            if vtep && r.vtep != NO_VTEP {
                self.names.names[r.vtep as usize].clone()
            } else {
                "-".into()
            },
        ]
    }

    /// Prints the table: PORT VLAN MAC TYPE AGE, and VTEP when any station
    /// is behind a VXLAN port. Columns are as wide as their widest cell.
    pub fn print(&self, out: &mut impl Write) -> io::Result<()> {
        let vtep = self.rows.iter().any(|r| r.vtep != NO_VTEP);
        let headers: &[&str] = if vtep {
            &["PORT", "VLAN", "MAC", "TYPE", "AGE", "VTEP"]
        } else {
            &["PORT", "VLAN", "MAC", "TYPE", "AGE"]
        };
        let n = headers.len();
        // Widths from one row at a time: the rows stay compact.
        let w = crate::table::widths(
            headers,
            self.rows
                .iter()
                .map(|r| self.cells(r, vtep).into_iter().take(n)),
        );
        crate::table::write_line(out, headers, &w)?;
        for r in &self.rows {
            crate::table::write_line(out, &self.cells(r, vtep)[..n], &w)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(json: &str) -> String {
        let mut de = serde_json::Deserializer::from_str(json);
        let t = FdbTable::default().deserialize(&mut de).unwrap();
        let mut out = Vec::new();
        t.print(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn table_without_vteps() {
        let t = table(
            r#"[{"mac":"02:00:00:00:00:01","vlan":1,"port":"h1","type":"dynamic","age_s":3},
                {"mac":"02:00:00:00:00:02","vlan":10,"port":"uplink","type":"static","age_s":0}]"#,
        );
        assert_eq!(
            t,
            "PORT    VLAN  MAC                TYPE     AGE\n\
             h1      1     02:00:00:00:00:01  dynamic  3\n\
             uplink  10    02:00:00:00:00:02  static   -\n"
        );
    }

    #[test]
    fn vtep_column_when_any_row_has_one() {
        let t = table(
            r#"[{"mac":"02:00:00:00:00:01","vlan":1,"port":"vx0","type":"dynamic","age_s":1,"vtep":"192.0.2.7"},
                {"mac":"02:00:00:00:00:02","vlan":1,"port":"h1","type":"dynamic","age_s":2}]"#,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "PORT  VLAN  MAC                TYPE     AGE  VTEP"
        );
        assert!(lines[1].ends_with("192.0.2.7"), "{t}");
        assert!(lines[2].ends_with(" -"), "{t}");
    }

    #[test]
    fn names_are_interned() {
        let mut de = serde_json::Deserializer::from_str(
            r#"[{"mac":"02:00:00:00:00:01","vlan":1,"port":"h1","type":"dynamic","age_s":1},
                {"mac":"02:00:00:00:00:02","vlan":1,"port":"h1","type":"dynamic","age_s":1}]"#,
        );
        let t = FdbTable::default().deserialize(&mut de).unwrap();
        assert_eq!(t.rows.len(), 2);
        assert_eq!(t.names.names, vec!["h1".to_string()]);
        assert_eq!(std::mem::size_of::<Row>(), 24);
    }

    #[test]
    fn bad_rows_are_errors_not_panics() {
        for bad in [
            r#"[{"mac":"zz","vlan":1,"port":"h1","type":"dynamic"}]"#,
            r#"[{"vlan":1}]"#,
            r#"{"mac":1}"#,
            r#"[1,2]"#,
        ] {
            let mut de = serde_json::Deserializer::from_str(bad);
            assert!(FdbTable::default().deserialize(&mut de).is_err(), "{bad}");
        }
    }
}
