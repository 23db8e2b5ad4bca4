//! Wide-area latency: nodes and clients placed in regions, each link delayed by the
//! round trip between its two regions.
//!
//! `[network] regions = ["east-us", "west-europe", ...]` puts node `i` in
//! `regions[i % len]` and the clients in `client_region` (default: the first;
//! `"leader"`: wherever the leader is placed). `leader_region` turns the placement,
//! once the cluster has elected, so that the leader is in that region. A
//! message from region `a` to region `b` takes half the round-trip time measured from
//! `a` to `b`, so a request and its answer together take the mean of the two directions'
//! measurements; `jitter_ms` draws each message's delay from a normal distribution of
//! that spread around it (never below 10 µs), and nodes of one region are
//! `intra_region_rtt_ms` apart. The same delays apply in the simulator (exactly, per
//! message, in order on each link as on a QUIC stream) and in real mode (each node's
//! transport holds what it sends to a peer for that peer's one-way delay, the harness
//! holds each client request for the clients' one-way delay to the node, and the node
//! holds each answer for the way back).
//!
//! The built-in table is [`AZURE_P95_RTT_MS`]; `rtt_ms_matrix` gives any other matrix,
//! its rows and columns named by `regions` in order.

use std::collections::BTreeMap;

/// Round-trip times between nine Azure regions, in ms, from Microsoft's published
/// statistics ("Azure network round-trip latency statistics", Microsoft Learn,
/// <https://learn.microsoft.com/en-us/azure/networking/azure-network-latency>): the
/// 95th percentile of one-minute probes over the 30 days ending 30 July 2026. Row is
/// the source region, column the destination, in the order of [`AZURE_REGIONS`]; the
/// two directions of a pair differ by a few ms, as published.
pub const AZURE_P95_RTT_MS: [[f64; 9]; 9] = [
    // australia-east, brazil-south, central-india, east-us, japan-east,
    // south-africa-north, southeast-asia, west-europe, west-us
    [0.0, 298.0, 151.0, 206.0, 105.0, 347.0, 98.0, 282.0, 141.0],
    [298.0, 0.0, 320.0, 121.0, 265.0, 327.0, 337.0, 191.0, 170.0],
    [152.0, 320.0, 0.0, 218.0, 129.0, 134.0, 59.0, 153.0, 224.0],
    [207.0, 119.0, 214.0, 0.0, 165.0, 226.0, 229.0, 89.0, 74.0],
    [105.0, 275.0, 129.0, 165.0, 0.0, 254.0, 74.0, 242.0, 109.0],
    [348.0, 326.0, 134.0, 225.0, 255.0, 0.0, 211.0, 171.0, 278.0],
    [98.0, 337.0, 58.0, 229.0, 74.0, 190.0, 0.0, 181.0, 171.0],
    [282.0, 189.0, 153.0, 91.0, 240.0, 171.0, 182.0, 0.0, 153.0],
    [142.0, 171.0, 224.0, 72.0, 110.0, 279.0, 172.0, 151.0, 0.0],
];

/// The names of [`AZURE_P95_RTT_MS`]'s rows and columns (Azure's region names in
/// lower case with dashes).
pub const AZURE_REGIONS: [&str; 9] = [
    "australia-east",
    "brazil-south",
    "central-india",
    "east-us",
    "japan-east",
    "south-africa-north",
    "southeast-asia",
    "west-europe",
    "west-us",
];

/// Where every node and the clients are, and the round trips between those places.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionMap {
    /// The regions as the file lists them; node `i` is in `names[i % len]`.
    pub names: Vec<String>,
    /// Round trip from `names[a]` to `names[b]`, ms (the diagonal is the intra-region
    /// round trip).
    pub rtt_ms: Vec<Vec<f64>>,
    /// Index in `names` of the clients' region.
    pub client_region: usize,
    /// `client_region = "leader"`: the clients move with the leader
    /// ([`RegionMap::with_leader_in`]); until then they are in the first region.
    pub clients_follow_leader: bool,
    /// Node `i` is in `names[(i + shift) % len]`: 0 as the file lists them, turned by
    /// [`RegionMap::with_leader_in`].
    pub shift: usize,
    /// Standard deviation of each message's one-way delay, ms.
    pub jitter_ms: f64,
}

impl RegionMap {
    /// From the file's keys: `regions` (built-in names unless `matrix` is given),
    /// an optional explicit round-trip matrix, the intra-region round trip, the
    /// clients' region and the jitter. The error says what is wrong, for the caller to
    /// place at the key.
    pub fn new(
        regions: &[String],
        matrix: Option<&[Vec<f64>]>,
        intra_region_rtt_ms: f64,
        client_region: Option<&str>,
        jitter_ms: f64,
    ) -> Result<RegionMap, String> {
        if regions.is_empty() {
            return Err("regions lists no region".into());
        }
        if !(intra_region_rtt_ms.is_finite() && intra_region_rtt_ms >= 0.0) {
            return Err(format!("intra_region_rtt_ms must be >= 0, got {intra_region_rtt_ms}"));
        }
        if !(jitter_ms.is_finite() && jitter_ms >= 0.0) {
            return Err(format!("jitter_ms must be >= 0, got {jitter_ms}"));
        }
        let mut seen = BTreeMap::new();
        for (i, name) in regions.iter().enumerate() {
            if let Some(first) = seen.insert(name.as_str(), i) {
                return Err(format!(
                    "region {name:?} is listed twice (at {first} and {i}); a node's place is its index modulo the list"
                ));
            }
        }
        let n = regions.len();
        let mut rtt_ms = vec![vec![intra_region_rtt_ms; n]; n];
        match matrix {
            Some(rows) => {
                if rows.len() != n || rows.iter().any(|row| row.len() != n) {
                    return Err(format!(
                        "rtt_ms_matrix must be {n} × {n} (one row and column per region in `regions`), got {} rows of {:?}",
                        rows.len(),
                        rows.iter().map(Vec::len).collect::<Vec<_>>()
                    ));
                }
                for (a, row) in rows.iter().enumerate() {
                    for (b, value) in row.iter().enumerate() {
                        if !(value.is_finite() && *value >= 0.0) {
                            return Err(format!("rtt_ms_matrix[{a}][{b}] must be >= 0, got {value}"));
                        }
                        if a != b {
                            rtt_ms[a][b] = *value;
                        }
                    }
                }
            }
            None => {
                let index = |name: &str| {
                    AZURE_REGIONS.iter().position(|r| *r == name).ok_or_else(|| {
                        format!(
                            "unknown region {name:?}: the built-in table has {} (or give rtt_ms_matrix)",
                            AZURE_REGIONS.join(", ")
                        )
                    })
                };
                let indices = regions.iter().map(|r| index(r)).collect::<Result<Vec<_>, _>>()?;
                for (a, ia) in indices.iter().enumerate() {
                    for (b, ib) in indices.iter().enumerate() {
                        if a != b {
                            rtt_ms[a][b] = AZURE_P95_RTT_MS[*ia][*ib];
                        }
                    }
                }
            }
        }
        let clients_follow_leader = client_region == Some("leader");
        let client_region = match client_region {
            None | Some("leader") => 0,
            Some(name) => regions.iter().position(|r| r == name).ok_or_else(|| {
                format!("client_region {name:?} is not one of the regions ({}) or \"leader\"", regions.join(", "))
            })?,
        };
        Ok(RegionMap { names: regions.to_vec(), rtt_ms, client_region, clients_follow_leader, jitter_ms, shift: 0 })
    }

    /// The same placement turned so that node `leader` is in region `region` (and node
    /// `leader + k` in the region `k` places after it in the list).
    pub fn with_leader_in(mut self, leader: u32, region: &str) -> Option<RegionMap> {
        let target = self.names.iter().position(|r| r == region)?;
        let len = self.names.len();
        self.shift = (target + len - leader as usize % len) % len;
        if self.clients_follow_leader {
            self.client_region = target;
        }
        Some(self)
    }

    /// How long a client waits before retrying (PBFT: before it suspects the primary):
    /// three times the longest round trip in the map, so no placement of leader or
    /// clients retries a request that is merely crossing the world.
    pub fn client_retry_timeout_ms(&self) -> f64 {
        3.0 * self.rtt_ms.iter().flatten().copied().fold(0.0, f64::max)
    }

    /// The region index of node `node`.
    pub fn region_of(&self, node: u32) -> usize {
        (node as usize + self.shift) % self.names.len()
    }

    /// One-way delay from node `from` to node `to`, ms.
    pub fn node_to_node_ms(&self, from: u32, to: u32) -> f64 {
        self.rtt_ms[self.region_of(from)][self.region_of(to)] / 2.0
    }

    /// One-way delay from a client to node `node` and from `node` back, ms.
    pub fn client_legs_ms(&self, node: u32) -> (f64, f64) {
        let (c, r) = (self.client_region, self.region_of(node));
        (self.rtt_ms[c][r] / 2.0, self.rtt_ms[r][c] / 2.0)
    }

    /// For a node in region `region`, the round trip to the nearest `k` other regions
    /// holding nodes of an `nodes`-node cluster, the k-th of them: how long a leader
    /// there waits for `k` acknowledgements (`k` = a majority less itself).
    pub fn kth_nearest_rtt_ms(&self, nodes: u32, leader: u32, k: usize) -> Option<f64> {
        let mut rtts: Vec<f64> = (0..nodes)
            .filter(|n| *n != leader)
            .map(|n| self.rtt_ms[self.region_of(leader)][self.region_of(n)])
            .collect();
        rtts.sort_by(f64::total_cmp);
        k.checked_sub(1).and_then(|i| rtts.get(i).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    /// The built-in table reads as published: spot values from Microsoft's page, and
    /// every pair within 25 ms of its reverse direction (South Africa North and
    /// Southeast Asia differ most: 211 and 190 ms).
    #[test]
    fn the_built_in_table_is_the_published_one() {
        let at = |a: &str, b: &str| {
            let (ia, ib) = (
                AZURE_REGIONS.iter().position(|r| *r == a).unwrap(),
                AZURE_REGIONS.iter().position(|r| *r == b).unwrap(),
            );
            AZURE_P95_RTT_MS[ia][ib]
        };
        assert_eq!(at("east-us", "west-europe"), 89.0);
        assert_eq!(at("west-europe", "east-us"), 91.0);
        assert_eq!(at("japan-east", "australia-east"), 105.0);
        assert_eq!(at("brazil-south", "southeast-asia"), 337.0);
        for a in 0..9 {
            assert_eq!(AZURE_P95_RTT_MS[a][a], 0.0);
            for b in 0..9 {
                let gap = (AZURE_P95_RTT_MS[a][b] - AZURE_P95_RTT_MS[b][a]).abs();
                assert!(gap <= 25.0, "{} <-> {}: {gap} ms apart", AZURE_REGIONS[a], AZURE_REGIONS[b]);
            }
        }
    }

    #[test]
    fn nodes_wrap_around_the_regions_and_clients_sit_in_theirs() {
        let map =
            RegionMap::new(&names(&["east-us", "west-europe", "japan-east"]), None, 1.0, Some("west-europe"), 0.0)
                .unwrap();
        assert_eq!(map.region_of(4), 1);
        assert_eq!(map.node_to_node_ms(0, 1), 44.5);
        assert_eq!(map.node_to_node_ms(1, 0), 45.5);
        // Nodes 0 and 3 share east-us.
        assert_eq!(map.node_to_node_ms(0, 3), 0.5);
        assert_eq!(map.client_legs_ms(2), (120.0, 121.0));
        // A leader in east-us of 5 nodes (regions 0,1,2,0,1) waits for the 2nd-nearest:
        // its neighbour in east-us (1 ms), then west-europe (89 ms).
        assert_eq!(map.kth_nearest_rtt_ms(5, 0, 2), Some(89.0));
        // Turned so node 2 leads from east-us: node 3 is in west-europe, node 1 in
        // japan-east.
        let turned = map.with_leader_in(2, "east-us").unwrap();
        assert_eq!((turned.region_of(2), turned.region_of(3), turned.region_of(1)), (0, 1, 2));
        assert!(turned.clone().with_leader_in(0, "mars").is_none());
        assert_eq!(turned.client_legs_ms(2), (45.5, 44.5), "the clients stay in west-europe");
        let following = RegionMap::new(&names(&["east-us", "west-europe"]), None, 1.0, Some("leader"), 0.0).unwrap();
        assert_eq!(following.client_region, 0);
        let following = following.with_leader_in(0, "west-europe").unwrap();
        assert_eq!(following.client_legs_ms(0), (0.5, 0.5), "the clients moved with the leader");
    }

    /// The claim of experiments/wan-5-regions.toml and docs/real-mode.md: of the five
    /// regions, a leader in East US reaches a majority (two others) within a 90 ms round
    /// trip, one in West Europe within 152 ms, the most of any (both directions' mean).
    #[test]
    fn east_us_is_the_best_leader_region_of_the_five_and_west_europe_the_worst() {
        let five = names(&["east-us", "west-us", "west-europe", "japan-east", "australia-east"]);
        let map = RegionMap::new(&five, None, 1.0, None, 0.0).unwrap();
        let quorum_rtt_ms = |leader: u32| {
            let mut rtts: Vec<f64> = (0..5)
                .filter(|n| *n != leader)
                .map(|n| (map.rtt_ms[leader as usize][n as usize] + map.rtt_ms[n as usize][leader as usize]) / 2.0)
                .collect();
            rtts.sort_by(f64::total_cmp);
            rtts[1]
        };
        let by_region: Vec<f64> = (0..5).map(quorum_rtt_ms).collect();
        assert_eq!(by_region[0], 90.0);
        assert_eq!(by_region[2], 152.0);
        assert!(by_region.iter().all(|r| (90.0..=152.0).contains(r)), "{by_region:?}");
    }

    #[test]
    fn bad_maps_are_refused_with_what_is_wrong() {
        let e = RegionMap::new(&names(&["east-us", "mars"]), None, 1.0, None, 0.0).unwrap_err();
        assert!(e.contains("unknown region \"mars\"") && e.contains("west-europe"), "{e}");
        let e = RegionMap::new(&names(&["a", "b"]), Some(&[vec![0.0, 5.0]]), 1.0, None, 0.0).unwrap_err();
        assert!(e.contains("2 × 2"), "{e}");
        let e =
            RegionMap::new(&names(&["a", "a"]), Some(&[vec![0.0, 5.0], vec![5.0, 0.0]]), 1.0, None, 0.0).unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
        let e = RegionMap::new(&names(&["east-us"]), None, 1.0, Some("west-us"), 0.0).unwrap_err();
        assert!(e.contains("client_region \"west-us\""), "{e}");
        let map = RegionMap::new(&names(&["a", "b"]), Some(&[vec![0.0, 5.0], vec![7.0, 0.0]]), 2.0, None, 0.5).unwrap();
        assert_eq!(map.rtt_ms, vec![vec![2.0, 5.0], vec![7.0, 2.0]]);
    }
}
