//! Which certificates this node accepts, kept current while it serves (issue 22).
//!
//! Two things change what a node trusts without a restart:
//! - **rotation**: its certificate, key or CA file is replaced on disk; the
//!   [`Keeper`] loads them once the change settles;
//! - **revocation**: an operator records a CRL the CA signed (`kakera ca revoke`,
//!   [`crate::raft::commands::ClientAction::Revoke`]); applying it asks the effect
//!   runner to [`Trust::catalog_changed`], and the keeper reads every CRL the
//!   catalog holds (and the config's `ca_crl` file), hands them to rustls' verifiers
//!   for the next handshakes both ways, closes its outbound connections to revoked
//!   nodes and publishes the new [`TrustView`], on which every inbound connection
//!   closes itself if its certificate is revoked.
//!
//! A CRL reaches every node through Raft, so a node that was down, restarted or
//! joined later has it too: it applies the catalog's CRLs before it serves.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kakera_net::{Peer, QuicLimits, SharedClientConfig, TlsFiles, TlsMaterial};
use kakera_proto::revocation::{self, CertRef, RevokedSet};
use tokio::sync::{Notify, watch};

use crate::raft::state_machine::StateMachine;

/// How often a node looks for a renewed certificate, key or CA file.
pub const TLS_RELOAD_EVERY_MS: u64 = 1_000;

/// QUIC application close code: the peer's certificate was revoked.
pub const CLOSE_CERTIFICATE_REVOKED: u32 = kakera_net::CLOSE_CERTIFICATE_REVOKED;

/// What the node trusts now.
#[derive(Debug, Default)]
pub struct TrustView {
    /// The CA certificates (DER): a CRL must be signed by one of them.
    pub cas: Vec<Vec<u8>>,
    /// The CRLs (DER) the verifiers apply.
    pub crls: Vec<Vec<u8>>,
    /// Every certificate they revoke.
    pub revoked: RevokedSet,
}

/// The node's current [`TrustView`] and a signal when it changes.
pub struct Trust {
    view: RwLock<Arc<TrustView>>,
    generation: watch::Sender<u64>,
    catalog: Notify,
}

impl Default for Trust {
    fn default() -> Self {
        Trust {
            view: RwLock::new(Arc::new(TrustView::default())),
            generation: watch::channel(0).0,
            catalog: Notify::new(),
        }
    }
}

impl Trust {
    /// What the node trusts now.
    pub fn view(&self) -> Arc<TrustView> {
        // A poisoned lock only means a writer panicked between two whole views.
        self.view.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the certificate `cert` is revoked.
    pub fn is_revoked(&self, cert: &CertRef) -> bool {
        self.view().revoked.contains(cert)
    }

    /// A receiver that changes each time a new view is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The catalog's CRLs changed (an applied revocation, an installed snapshot):
    /// wakes the keeper.
    pub fn catalog_changed(&self) {
        self.catalog.notify_one();
    }

    fn publish(&self, view: TrustView) {
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(view);
        self.generation.send_modify(|g| *g += 1);
    }
}

/// BLAKE3 over the certificate, key and CA files as they are now (`None` if one is
/// missing or unreadable).
fn tls_files_digest(files: &TlsFiles) -> Option<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    for path in [&files.cert, &files.key, &files.ca] {
        let bytes = zeroize::Zeroizing::new(std::fs::read(path).ok()?);
        h.update(&(bytes.len() as u64).to_be_bytes());
        h.update(&bytes);
    }
    Some(*h.finalize().as_bytes())
}

/// Keeps the node's QUIC configs in step with its files and the catalog's CRLs.
pub struct Keeper {
    /// What it publishes to.
    pub trust: Arc<Trust>,
    /// The catalog it reads CRLs from.
    pub state: StateMachine,
    /// The node's certificate, key and CA files.
    pub files: TlsFiles,
    /// The config's `ca_crl` file, if any.
    pub crl_file: Option<PathBuf>,
    /// The node's name: a reloaded certificate must name it.
    pub name: String,
    /// QUIC limits for the configs it builds.
    pub limits: QuicLimits,
    /// The endpoint whose server config it replaces.
    pub endpoint: quinn::Endpoint,
    /// The client config outbound connections read.
    pub client_config: SharedClientConfig,
    /// The other nodes, whose connections close when their certificate is revoked.
    pub peers: BTreeMap<u64, Arc<Peer>>,
    /// The material in use.
    pub material: TlsMaterial,
}

impl Keeper {
    /// Every CRL to apply, with what it says: the catalog's, then the config
    /// file's. One that cannot be read is left out with a warning (the catalog's were
    /// parsed when recorded).
    fn crls(&self) -> Vec<(Vec<u8>, revocation::CrlSummary)> {
        let mut crls = match self.state.revocation_lists() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the catalog's revocation lists could not be read");
                Vec::new()
            }
        };
        if let Some(path) = &self.crl_file {
            match kakera_net::read_crls(path) {
                Ok(c) => crls.extend(c),
                Err(e) => tracing::warn!(error = %e, "the config's ca_crl file could not be read"),
            }
        }
        crls.into_iter()
            .filter_map(|c| match revocation::parse_crl(&c) {
                Ok(summary) => Some((c, summary)),
                Err(e) => {
                    tracing::warn!(error = %e, "a revocation list is left out");
                    None
                }
            })
            .collect()
    }

    /// Builds both configs from the material and the CRLs now, installs them,
    /// closes outbound connections to revoked nodes and publishes the view. An error
    /// building the configs leaves the ones in use (and is returned).
    pub async fn apply(&mut self) -> Result<(), String> {
        let (crls, summaries): (Vec<_>, Vec<_>) = self.crls().into_iter().unzip();
        self.material.set_crls(crls.clone());
        let built = self
            .material
            .server_config(self.limits)
            .and_then(|server| Ok((server, self.material.client_config(self.limits)?)))
            .map_err(|e| e.to_string());
        if let Ok((server, client)) = &built {
            self.endpoint.set_server_config(Some(server.clone()));
            // A poisoned lock only means a reader panicked; replace the value.
            *self
                .client_config
                .write()
                .unwrap_or_else(|p| p.into_inner()) = client.clone();
        }
        // Even when rustls refused to build with these CRLs, the certificates they
        // list lose their connections and every request (the view below).
        let revoked = RevokedSet::of(&summaries);
        let closes = |leaf: &[u8]| revocation::cert_ref(leaf).is_ok_and(|c| revoked.contains(&c));
        for peer in self.peers.values() {
            if peer
                .close_if(
                    closes,
                    CLOSE_CERTIFICATE_REVOKED,
                    b"your certificate was revoked",
                )
                .await
            {
                tracing::warn!(peer = %peer.name(), "closed the connection to a node whose certificate is revoked");
            }
        }
        self.trust.publish(TrustView {
            cas: self
                .material
                .ca_certs()
                .iter()
                .map(|c| c.to_vec())
                .collect(),
            crls,
            revoked,
        });
        built.map(|_| ())
    }

    /// Loads the files again and checks that they are this node's.
    fn reload_files(&self) -> Result<TlsMaterial, String> {
        let tls = TlsMaterial::load(&self.files).map_err(|e| e.to_string())?;
        let id = kakera_proto::Identity::from_cert_der(tls.leaf()).map_err(|e| e.to_string())?;
        if id.role != kakera_proto::Role::Node || id.name != self.name {
            return Err(format!(
                "the new certificate is '{}' with role '{}', not this node ('{}', node)",
                id.name, id.role, self.name
            ));
        }
        Ok(tls)
    }

    /// Runs until shutdown. Rotation: when the certificate, key or CA file changes
    /// on disk and stays the same for one more look (a write has finished), the node
    /// serves new connections, and makes new outbound ones, with them; connections
    /// already open keep the identity they were made with (and close when a peer's
    /// certificate expires). A file set that does not load, or a certificate that is
    /// not this node's, is refused with a warning and the current one stays.
    /// Revocation: each catalog change is applied at once.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let trust = self.trust.clone();
        let mut in_use = tls_files_digest(&self.files);
        let mut last_seen = in_use;
        let mut tick = tokio::time::interval(Duration::from_millis(TLS_RELOAD_EVERY_MS));
        loop {
            let revocation = tokio::select! {
                _ = tick.tick() => false,
                () = trust.catalog.notified() => true,
                _ = shutdown.changed() => return,
            };
            if revocation {
                match self.apply().await {
                    Ok(()) => tracing::info!(
                        revoked = self.trust.view().revoked.len(),
                        "revocation lists applied: revoked certificates are refused"
                    ),
                    Err(e) => tracing::error!(error = %e, "revocation lists could not be applied"),
                }
                continue;
            }
            let now = tls_files_digest(&self.files);
            let settled = now.is_some() && now == last_seen && now != in_use;
            last_seen = now;
            if !settled {
                continue;
            }
            in_use = now;
            match self.reload_files() {
                Ok(material) => {
                    let previous = std::mem::replace(&mut self.material, material);
                    match self.apply().await {
                        Ok(()) => tracing::info!(
                            "certificate, key or CA reloaded from disk; new connections use them"
                        ),
                        Err(e) => {
                            self.material = previous;
                            tracing::warn!(error = %e, "a changed certificate, key or CA file could not be used; the current one stays");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a changed certificate, key or CA file could not be used; the current one stays")
                }
            }
        }
    }
}
