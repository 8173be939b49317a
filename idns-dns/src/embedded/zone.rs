//! The data of the embedded server: what each zone publishes (`ZoneState`, changed under a
//! lock) and the read-only view the workers answer from (`Snapshot`, swapped atomically).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use idns_core::{DnsName, Ownership, RecordSet, ownership_name};
use serde::{Deserialize, Serialize};

use super::config::ValidZone;
use super::dynamic_ttl::TtlMode;

/// What one service name publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) records: RecordSet,
    pub(crate) ttl: u32,
    pub(crate) owner: Ownership,
}

/// A zone and the names published in it.
#[derive(Debug, Clone)]
pub(crate) struct ZoneState {
    pub(crate) cfg: ValidZone,
    pub(crate) serial: u32,
    pub(crate) names: BTreeMap<DnsName, Entry>,
    /// The dynamic TTL mode of each name that has one (not persisted: advice is live).
    pub(crate) modes: BTreeMap<DnsName, TtlMode>,
}

impl ZoneState {
    pub(crate) fn new(cfg: ValidZone, default_serial: u32) -> Self {
        Self {
            serial: cfg.serial.unwrap_or(default_serial),
            cfg,
            names: BTreeMap::new(),
            modes: BTreeMap::new(),
        }
    }

    /// The TTL `name` answers with, given the TTL its change asked for.
    pub(crate) fn served_ttl(&self, name: &DnsName, requested: u32) -> u32 {
        match &self.cfg.dynamic_ttl {
            Some(bounds) => bounds.served(requested, self.modes.get(name).copied()),
            None => requested,
        }
    }

    /// Whether `name` is one of the zone's own names (apex, name servers, ownership records),
    /// which a service may not take over.
    pub(crate) fn reserved(&self, name: &DnsName) -> Option<&'static str> {
        if *name == self.cfg.name {
            return Some("is the zone apex");
        }
        if self
            .cfg
            .nameservers
            .iter()
            .any(|(n, a)| n == name && !a.is_empty())
        {
            return Some("is a name server of the zone");
        }
        if name.as_str().starts_with("_idns.") {
            return Some("is an ownership record name (_idns.*)");
        }
        None
    }
}

/// The read-only view the workers answer from.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// Increases with every swap; workers compare it to notice a new snapshot.
    pub(crate) generation: u64,
    pub(crate) zones: Vec<ServedZone>,
}

/// One zone, ready to answer from.
#[derive(Debug)]
pub(crate) struct ServedZone {
    pub(crate) origin: LowerName,
    /// The SOA record with the negative TTL, for the authority section of negative answers.
    pub(crate) negative_soa: Record,
    pub(crate) nodes: HashMap<LowerName, Node>,
    /// Names that own no records but have names below them (empty non-terminals).
    pub(crate) ents: HashSet<LowerName>,
}

/// The records of one name, one RRset per type.
#[derive(Debug, Default)]
pub(crate) struct Node {
    pub(crate) rrsets: Vec<(RecordType, Vec<Record>)>,
}

impl Node {
    pub(crate) fn get(&self, rtype: RecordType) -> Option<&[Record]> {
        self.rrsets
            .iter()
            .find(|(t, _)| *t == rtype)
            .map(|(_, r)| r.as_slice())
    }

    fn push(&mut self, record: Record) {
        let rtype = record.record_type();
        match self.rrsets.iter_mut().find(|(t, _)| *t == rtype) {
            Some((_, set)) => set.push(record),
            None => self.rrsets.push((rtype, vec![record])),
        }
    }
}

impl Snapshot {
    /// The zone `name` lies in (the longest match), if any.
    pub(crate) fn zone_of(&self, name: &LowerName) -> Option<&ServedZone> {
        self.zones
            .iter()
            .filter(|z| z.origin.zone_of(name))
            .max_by_key(|z| z.origin.num_labels())
    }

    /// Builds the served view of `zones`.
    pub(crate) fn build(generation: u64, zones: &[ZoneState]) -> Result<Snapshot, String> {
        let zones = zones
            .iter()
            .map(ServedZone::build)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Snapshot { generation, zones })
    }
}

pub(crate) fn to_name(name: &DnsName) -> Result<Name, String> {
    Name::from_ascii(name.to_fqdn()).map_err(|e| format!("{name}: {e}"))
}

impl ServedZone {
    fn build(z: &ZoneState) -> Result<ServedZone, String> {
        let origin = to_name(&z.cfg.name)?;
        let mut nodes: HashMap<LowerName, Node> = HashMap::new();
        let mut add = |record: Record| {
            nodes
                .entry(LowerName::new(&record.name))
                .or_default()
                .push(record);
        };
        let soa_rdata = SOA::new(
            to_name(z.cfg.nameservers.first().map_or(&z.cfg.name, |(n, _)| n))?,
            to_name(&z.cfg.hostmaster)?,
            z.serial,
            3600,
            600,
            604_800,
            z.cfg.negative_ttl.as_secs(),
        );
        let soa_ttl = z.cfg.soa_ttl.as_secs();
        let soa = Record::from_rdata(origin.clone(), soa_ttl, RData::SOA(soa_rdata));
        let mut negative_soa = soa.clone();
        negative_soa.ttl = soa_ttl.min(z.cfg.negative_ttl.as_secs());
        add(soa);
        for (ns, addrs) in &z.cfg.nameservers {
            let ns_name = to_name(ns)?;
            add(Record::from_rdata(
                origin.clone(),
                soa_ttl,
                RData::NS(NS(ns_name.clone())),
            ));
            for ip in addrs {
                add(address_record(ns_name.clone(), soa_ttl, *ip));
            }
        }
        for (name, entry) in &z.names {
            let owner = to_name(name)?;
            let ttl = z.served_ttl(name, entry.ttl);
            match &entry.records {
                RecordSet::Addresses(ips) => {
                    for ip in ips {
                        add(address_record(owner.clone(), ttl, *ip));
                    }
                }
                RecordSet::Alias(target) => add(Record::from_rdata(
                    owner.clone(),
                    ttl,
                    RData::CNAME(CNAME(to_name(target)?)),
                )),
                RecordSet::Empty => {}
            }
            let txt_name = ownership_name(name).map_err(|e| e.to_string())?;
            add(Record::from_rdata(
                to_name(&txt_name)?,
                ttl,
                RData::TXT(TXT::new(vec![entry.owner.to_txt()])),
            ));
        }
        let origin = LowerName::new(&origin);
        let mut ents = HashSet::new();
        for name in nodes.keys() {
            let mut n = name.base_name();
            while origin.zone_of(&n) && n != origin {
                if !nodes.contains_key(&n) {
                    ents.insert(n.clone());
                }
                n = n.base_name();
            }
        }
        Ok(ServedZone {
            origin,
            negative_soa,
            nodes,
            ents,
        })
    }
}

fn address_record(name: Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name, ttl, data)
}
