//! How many requests, and how many bytes of them, each client has in the broker (waiting in a
//! queue or in flight at a worker), so that one client cannot fill the broker's memory
//! (`client_queue_limit`, `client_queue_limit_bytes`).
//!
//! Each admitted request carries a [`Charge`] against its client's account and gives it back
//! when it is dropped, whichever way it leaves the broker (answered, expired, failed, refused
//! after all, shut down). The account can therefore never drift from the requests that exist.
//! Accounts are shared atomics only because the broker must be `Send` to reach its thread; the
//! loop thread is their only user.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::id_map::IdMap;

/// What one client holds: requests and their bytes.
#[derive(Debug, Default)]
struct Account {
    requests: AtomicU64,
    bytes: AtomicU64,
}

/// Why a client may not add a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFull {
    /// It holds this many requests already (`client_queue_limit`).
    Requests(u64),
    /// It holds this many bytes already (`client_queue_limit_bytes`).
    Bytes(u64),
}

/// One request and its bytes held against its client's account; released on drop.
#[derive(Debug)]
pub struct Charge {
    bytes: u64,
    account: Option<Arc<Account>>,
}

impl Charge {
    /// A charge of `bytes` against no account (client bounds off, or in tests).
    pub fn untracked(bytes: u64) -> Self {
        Charge {
            bytes,
            account: None,
        }
    }

    /// The request's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(account) = &self.account {
            account.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
            account.requests.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Every client's account.
pub struct ClientLedger {
    /// Most bytes one client may hold; 0: unlimited.
    limit: u64,
    /// Most requests one client may hold; 0: unlimited.
    request_limit: u64,
    accounts: IdMap<Arc<Account>>,
}

impl ClientLedger {
    /// A ledger allowing each client `limit` bytes and `request_limit` requests (0: unlimited;
    /// with both 0 nothing is tracked).
    pub fn new(limit: u64, request_limit: u64) -> Self {
        ClientLedger {
            limit,
            request_limit,
            accounts: IdMap::default(),
        }
    }

    /// The per-client byte limit (0: unlimited).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The per-client request limit (0: unlimited).
    pub fn request_limit(&self) -> u64 {
        self.request_limit
    }

    /// Charges one request of `bytes` to `client`, or says which limit that would exceed.
    pub fn charge(&mut self, client: &[u8], bytes: u64) -> Result<Charge, ClientFull> {
        if self.limit == 0 && self.request_limit == 0 {
            return Ok(Charge::untracked(bytes));
        }
        let account = match self.accounts.get(client) {
            Some(account) => account.clone(),
            None => {
                let account = Arc::new(Account::default());
                self.accounts.insert(client.into(), account.clone());
                account
            }
        };
        let requests = account.requests.load(Ordering::Relaxed);
        if self.request_limit > 0 && requests >= self.request_limit {
            return Err(ClientFull::Requests(requests));
        }
        let held = account.bytes.load(Ordering::Relaxed);
        if self.limit > 0 && held.saturating_add(bytes) > self.limit {
            return Err(ClientFull::Bytes(held));
        }
        account.bytes.fetch_add(bytes, Ordering::Relaxed);
        account.requests.fetch_add(1, Ordering::Relaxed);
        Ok(Charge {
            bytes,
            account: Some(account),
        })
    }

    /// Bytes `client` holds now.
    #[cfg(test)]
    pub fn held(&self, client: &[u8]) -> u64 {
        self.accounts
            .get(client)
            .map_or(0, |a| a.bytes.load(Ordering::Relaxed))
    }

    /// Forgets the accounts of clients with nothing in the broker (the ledger's own reference is
    /// the last one), and gives back the map's spare room after many clients left.
    pub fn prune(&mut self) {
        self.accounts.retain(|_, a| Arc::strong_count(a) > 1);
        if self.accounts.capacity() > 2 * self.accounts.len() + 64 {
            self.accounts.shrink_to_fit();
        }
    }

    /// Clients with an account.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.accounts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_to_the_limit_and_go_back_when_dropped() {
        let mut ledger = ClientLedger::new(100, 0);
        let a = ledger.charge(b"a", 60).unwrap();
        let b = ledger.charge(b"a", 40).unwrap();
        assert_eq!(ledger.held(b"a"), 100);
        assert_eq!(
            ledger.charge(b"a", 1).unwrap_err(),
            ClientFull::Bytes(100),
            "full"
        );
        let other = ledger.charge(b"b", 100).unwrap();
        assert_eq!(other.bytes(), 100, "accounts are per client");
        drop(a);
        assert_eq!(ledger.held(b"a"), 40);
        let c = ledger.charge(b"a", 60).unwrap();
        drop((b, c, other));
        assert_eq!(ledger.held(b"a"), 0, "back to zero");
        assert_eq!(ledger.held(b"b"), 0);
        assert!(
            ledger.charge(b"a", 101).is_err(),
            "never more than the limit"
        );
    }

    #[test]
    fn pruning_forgets_only_clients_with_nothing_held() {
        let mut ledger = ClientLedger::new(10, 0);
        let held = ledger.charge(b"busy", 5).unwrap();
        for i in 0..1000u32 {
            drop(ledger.charge(&i.to_be_bytes(), 1).unwrap());
        }
        assert_eq!(ledger.len(), 1001);
        ledger.prune();
        assert_eq!(ledger.len(), 1);
        assert_eq!(ledger.held(b"busy"), 5);
        drop(held);
        ledger.prune();
        assert_eq!(ledger.len(), 0);
    }

    #[test]
    fn the_request_count_is_bounded_too() {
        let mut ledger = ClientLedger::new(0, 2);
        let held = [
            ledger.charge(b"a", 1).unwrap(),
            ledger.charge(b"a", 1).unwrap(),
        ];
        assert_eq!(ledger.charge(b"a", 1).unwrap_err(), ClientFull::Requests(2));
        assert!(ledger.charge(b"b", 1).is_ok(), "per client");
        drop(held);
        assert!(ledger.charge(b"a", 1).is_ok());
    }

    #[test]
    fn no_limit_tracks_nothing() {
        let mut ledger = ClientLedger::new(0, 0);
        let big = ledger.charge(b"a", u64::MAX).unwrap();
        assert_eq!(big.bytes(), u64::MAX);
        assert_eq!((ledger.len(), ledger.held(b"a")), (0, 0));
    }
}
