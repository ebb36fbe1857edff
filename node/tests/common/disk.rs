//! What a node keeps on disk, read from outside the running process: its committed
//! shares (the database opened as a secondary, share files) and a byte search over
//! every file of its data directory (erasure tests, P6).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kakera_proto::RecordId;

use super::LocalCluster;

/// Bytes of each share searched for on disk (from the middle of the share).
pub const WINDOW_BYTES: usize = 48;

/// The committed shares node `id` stores, read from its database (opened read-only
/// beside the running node): record -> share bytes.
pub fn held_shares(cluster: &LocalCluster, id: u64) -> BTreeMap<RecordId, Vec<u8>> {
    let path = cluster.dir.join(format!("data/node-{id}/db"));
    let secondary = cluster
        .dir
        .join(format!("secondary-{id}-{}", rand_suffix()));
    let opts = rocksdb::Options::default();
    let db =
        rocksdb::DB::open_cf_as_secondary(&opts, &path, &secondary, kakera_node::store::ALL_CFS)
            .unwrap();
    let cf = db.cf_handle(kakera_node::store::CF_SHARES).unwrap();
    let mut out = BTreeMap::new();
    for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (k, v) = item.unwrap();
        let id = RecordId(k.as_ref().try_into().unwrap());
        let share = if v[0] == 3 {
            // A share in a file: the value holds its digest (bytes 9..41).
            let digest = kakera_proto::Digest(v[9..41].try_into().unwrap());
            let root = path.join(kakera_node::share_files::FILES_DIR);
            std::fs::read(kakera_node::share_files::ShareFiles::path_in(
                &root, &id, &digest,
            ))
            .unwrap()
        } else {
            v[kakera_node::shares::HEADER_BYTES..].to_vec()
        };
        out.insert(id, share);
    }
    drop(db);
    let _ = std::fs::remove_dir_all(secondary);
    out
}

/// How many share files node `id` keeps beside its database.
pub fn share_files(cluster: &LocalCluster, id: u64) -> usize {
    let root = cluster
        .dir
        .join(format!("data/node-{id}/db"))
        .join(kakera_node::share_files::FILES_DIR);
    let Ok(dirs) = std::fs::read_dir(root) else {
        return 0;
    };
    dirs.flatten()
        .map(|d| std::fs::read_dir(d.path()).map_or(0, |f| f.count()))
        .sum()
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A window from the middle of a share: 48 bytes of ciphertext shares never occur by
/// chance anywhere else.
pub fn window(share: &[u8]) -> Vec<u8> {
    let mid = share.len() / 2;
    share[mid..mid + WINDOW_BYTES].to_vec()
}

/// Every file under node `id`'s data directory that contains `needle`.
pub fn files_containing(cluster: &LocalCluster, id: u64, needle: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![cluster.dir.join(format!("data/node-{id}"))];
    // Bounded by the data directory's size.
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// Waits until no file of any node holds any of `windows` (the purger runs after the
/// erase entry is applied); panics naming the files that still do.
pub async fn wait_gone_from_disk(cluster: &LocalCluster, windows: &BTreeMap<RecordId, Vec<u8>>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut left = Vec::new();
        for id in cluster.ids.clone() {
            for (record, w) in windows {
                for f in files_containing(cluster, id, w) {
                    left.push(format!("{record} in {f}"));
                }
            }
        }
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "erased share bytes are still on disk: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Windows of every stored share of `records`, from every node's database; checks
/// first that the search works (each window is found in some file of its holder).
pub fn share_windows(cluster: &LocalCluster, records: &[RecordId]) -> BTreeMap<RecordId, Vec<u8>> {
    let mut out = BTreeMap::new();
    for id in cluster.ids.clone() {
        for (record, share) in held_shares(cluster, id) {
            if records.contains(&record) {
                let w = window(&share);
                assert!(
                    !files_containing(cluster, id, &w).is_empty(),
                    "positive control: the share of {record} on node {id} is not found in \
                     its files, so the search could not see it either"
                );
                // One window per record is enough; keep the first holder's.
                out.entry(record).or_insert(w);
            }
        }
    }
    assert_eq!(out.len(), records.len(), "every record has a stored share");
    out
}
