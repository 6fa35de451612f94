//! One run at a time per store: a lease object under the plan root, created with a conditional
//! put so that of two runs starting together exactly one gets it.
//!
//! Two overlapping runs are not unsafe by themselves (each deletes only blobs it found
//! unreferenced in eligible generations), but they double the load on the store and make
//! the breakers' history meaningless; above all, an operator must be able to know that no
//! sweep is running before restoring or migrating. A lease carries an expiry so that a crashed
//! run does not lock the store forever: once expired, the next run takes it over. A working run
//! renews it ([`Lease::renew`], every third of the TTL), so the expiry is the last heartbeat
//! plus the TTL, and a killed run's lease frees the store within one TTL.

use crate::error::{Error, Result};
use crate::filter::hex;
use crate::outcome::Outcome;
use crate::plan_root::{LEASES, PlanRoot};
use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use object_store::{PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Attempts at taking a lease that keeps changing hands.
const ATTEMPTS: usize = 3;

/// Who holds a store, until when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    pub store: String,
    pub acquired_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A lease held by this process.
#[derive(Debug, Clone)]
pub struct Lease {
    file: LeaseFile,
    pub record: LeaseRecord,
}

/// The object a store's lease is kept in, whoever holds it.
#[derive(Debug, Clone)]
struct LeaseFile {
    root: PlanRoot,
    path: Path,
}

impl LeaseFile {
    /// The lease object of `store` under `root`.
    fn of(root: &PlanRoot, store: &str) -> LeaseFile {
        let name = format!("{}.json", &hex(&Sha256::digest(store.as_bytes()))[..16]);
        LeaseFile {
            root: root.clone(),
            path: root.location.path.clone().join(LEASES).join(name),
        }
    }

    fn url(&self) -> String {
        format!(
            "{}/{LEASES}/{}",
            self.root.location,
            self.path.filename().unwrap_or("")
        )
    }

    fn failed(&self, what: &str, e: object_store::Error) -> Error {
        Error::runtime(format!("{what} the lease {}: {e}", self.url()))
    }

    async fn read(&self) -> Result<Option<(LeaseRecord, Option<UpdateVersion>)>> {
        let get = match self.root.location.store.get(&self.path).await {
            Ok(get) => get,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.failed("reading", e)),
        };
        let version = get.meta.e_tag.clone().map(|e_tag| UpdateVersion {
            e_tag: Some(e_tag),
            version: get.meta.version.clone(),
        });
        let bytes = get.bytes().await.map_err(|e| self.failed("reading", e))?;
        let record = serde_json::from_slice(&bytes).map_err(|e| {
            Error::aborted(format!(
                "the lease {} is not a blobgc lease ({e}): delete it by hand if no run is going on",
                self.url()
            ))
        })?;
        Ok(Some((record, version)))
    }

    async fn delete(&self) -> Result<()> {
        match self.root.location.store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("deleting", e)),
        }
    }
}

impl Lease {
    /// How to try again once `holder` is found in the lease (`version` its conditional-update
    /// token): this run's own lease, left by a crash, is retaken; an expired one is taken over
    /// (its run noted in `expired`); a live one is refused.
    async fn next_try(
        &self,
        holder: LeaseRecord,
        version: Option<UpdateVersion>,
        now: DateTime<Utc>,
        expired: &mut Option<String>,
    ) -> Result<PutMode> {
        if holder.run_id == self.record.run_id {
            // This run's own lease, left by a crash: a resumed sweep retakes it.
            return Ok(PutMode::Overwrite);
        }
        if holder.expires_at > now {
            return Err(Error::Locked(format!(
                "another blobgc run holds the lease of {}: run {} on host {} (pid {}) since {}, until {}; \
                 wait for it, or once it is surely dead delete {}",
                self.record.store,
                holder.run_id,
                holder.host,
                holder.pid,
                holder.acquired_at,
                holder.expires_at,
                self.file.url()
            )));
        }
        tracing::warn!(holder = %holder.run_id, expired = %holder.expires_at, "taking over an expired lease");
        *expired = Some(holder.run_id.clone());
        Ok(match version {
            Some(v) => PutMode::Update(v),
            None => {
                self.file.delete().await?;
                PutMode::Create
            }
        })
    }

    /// Takes the lease of `store` for `run_id` until `now + ttl`; exit 5 naming the holder when
    /// another run holds it.
    pub async fn acquire(
        root: &PlanRoot,
        store: &str,
        run_id: &str,
        ttl_seconds: u64,
        now: DateTime<Utc>,
    ) -> Result<Lease> {
        let record = LeaseRecord {
            run_id: run_id.to_string(),
            host: host(),
            pid: std::process::id(),
            store: store.to_string(),
            acquired_at: now,
            expires_at: expiry(now, ttl_seconds),
        };
        let json = encode(&record)?;
        let lease = Lease {
            file: LeaseFile::of(root, store),
            record,
        };
        let store_api = &root.location.store;
        let mut mode = PutMode::Create;
        let mut expired: Option<String> = None;
        for _ in 0..ATTEMPTS {
            let put = store_api
                .put_opts(
                    &lease.file.path,
                    PutPayload::from(json.clone()),
                    PutOptions::from(mode.clone()),
                )
                .await;
            match put {
                Ok(_) => return Ok(lease),
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => {}
                // No conditional update here (local disks): delete the expired lease and race
                // for a fresh one, which the conditional create still arbitrates.
                Err(object_store::Error::NotImplemented { .. })
                    if matches!(mode, PutMode::Update(_)) =>
                {
                    if let Some((holder, _)) = lease.file.read().await?
                        && Some(&holder.run_id) == expired.as_ref()
                    {
                        lease.file.delete().await?;
                    }
                    mode = PutMode::Create;
                    continue;
                }
                Err(e) => return Err(lease.file.failed("taking", e)),
            }
            mode = match lease.file.read().await? {
                Some((holder, version)) => {
                    lease.next_try(holder, version, now, &mut expired).await?
                }
                None => PutMode::Create,
            };
        }
        Err(Error::Locked(format!(
            "the lease of {store} at {} changed hands {ATTEMPTS} times while taking it: another run is starting",
            lease.file.url()
        )))
    }

    /// Fails (exit 3) unless this run still holds its lease at `now`: a run that outlived its
    /// lease may overlap another and must not start deleting.
    pub async fn check(&self, now: DateTime<Utc>) -> Result<()> {
        match self.file.read().await? {
            Some((holder, _)) if holder.run_id == self.record.run_id && holder.expires_at > now => {
                Ok(())
            }
            Some((holder, _)) if holder.run_id != self.record.run_id => Err(self.lost_to(&holder)),
            _ => Err(Error::aborted(format!(
                "the lease of {} expired at {} before the sweep started (raise --lease-ttl): not deleting",
                self.record.store, self.record.expires_at
            ))),
        }
    }

    /// Gives the lease back, if it is still ours.
    pub async fn release(self) -> Result<()> {
        if let Some((holder, _)) = self.file.read().await?
            && holder.run_id == self.record.run_id
        {
            self.file.delete().await?;
        }
        Ok(())
    }

    /// Another run holds what was this run's lease: nothing may be deleted.
    fn lost_to(&self, holder: &LeaseRecord) -> Error {
        Error::aborted(format!(
            "lost the lease of {} to run {} on host {}: not deleting",
            self.record.store, holder.run_id, holder.host
        ))
    }

    /// Moves the expiry to `now + ttl_seconds`, with a conditional update where the store has
    /// one; fails (exit 3) when another run holds the lease or it is gone.
    pub async fn renew(&mut self, now: DateTime<Utc>, ttl_seconds: u64) -> Result<()> {
        let Some((holder, version)) = self.file.read().await? else {
            return Err(Error::aborted(format!(
                "the lease {} is gone: not deleting",
                self.file.url()
            )));
        };
        if holder.run_id != self.record.run_id {
            return Err(self.lost_to(&holder));
        }
        let record = LeaseRecord {
            expires_at: expiry(now, ttl_seconds),
            ..self.record.clone()
        };
        let json = encode(&record)?;
        let store = &self.file.root.location.store;
        let mode = version.map_or(PutMode::Overwrite, PutMode::Update);
        let put = |mode: PutMode| {
            store.put_opts(
                &self.file.path,
                PutPayload::from(json.clone()),
                PutOptions::from(mode),
            )
        };
        match put(mode).await {
            Ok(_) => {}
            // No conditional update here (local disks): the holder was checked just above.
            Err(object_store::Error::NotImplemented { .. }) => {
                put(PutMode::Overwrite)
                    .await
                    .map_err(|e| self.file.failed("renewing", e))?;
            }
            Err(e) => return Err(self.file.failed("renewing", e)),
        }
        self.record = record;
        Ok(())
    }
}

/// What `blobgc unlock` found and did.
#[derive(Debug, Clone, Serialize)]
pub struct UnlockReport {
    pub store: String,
    pub lease: String,
    /// Who held the lease (none: the store was not locked).
    pub holder: Option<LeaseRecord>,
    pub removed: bool,
}

/// Removes the lease of `store` under `root` by hand, after saying whose it was. Refused
/// (exit 3) while it is live (renewed within its TTL) unless `force`, and when `run` names
/// another holder: a live run would go on deleting beside the next one.
pub async fn unlock(
    root: &PlanRoot,
    store: &str,
    run: Option<&str>,
    force: bool,
    now: DateTime<Utc>,
) -> Result<UnlockReport> {
    let lease = LeaseFile::of(root, store);
    let holder = lease.read().await?.map(|(holder, _)| holder);
    let mut report = UnlockReport {
        store: store.to_string(),
        lease: lease.url(),
        holder: holder.clone(),
        removed: false,
    };
    let Some(holder) = holder else {
        return Ok(report);
    };
    if let Some(run) = run.filter(|run| *run != holder.run_id) {
        return Err(Error::aborted(format!(
            "the lease of {store} is held by run {}, not {run}: left alone",
            holder.run_id
        )));
    }
    if holder.expires_at > now && !force {
        return Err(Error::aborted(format!(
            "run {} on host {} (pid {}) renewed the lease of {store} until {}: it may still be \
             running; stop it first, or --force once it is surely dead",
            holder.run_id, holder.host, holder.pid, holder.expires_at
        )));
    }
    lease.delete().await?;
    report.removed = true;
    Ok(report)
}

/// The expiry of a lease renewed at `now` for `ttl_seconds`.
fn expiry(now: DateTime<Utc>, ttl_seconds: u64) -> DateTime<Utc> {
    now + chrono::Duration::seconds(ttl_seconds.min(i64::MAX as u64) as i64)
}

fn encode(record: &LeaseRecord) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(record)
        .map_err(|e| Error::runtime(format!("encoding the lease: {e}")))
}

fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

impl Outcome for UnlockReport {
    fn human(&self) -> String {
        match (&self.holder, self.removed) {
            (None, _) => format!("blobgc: {} holds no lease\n", self.store),
            (Some(h), removed) => format!(
                "blobgc: the lease of {} was held by run {} on host {} (pid {}) until {}{}\n",
                self.store,
                h.run_id,
                h.host,
                h.pid,
                h.expires_at,
                if removed { ": removed" } else { "" }
            ),
        }
    }

    fn exit_code(&self) -> i32 {
        0
    }
}
