//! Prekey upkeep: signed prekey rotation and one-time prekey top-up (`docs/client.md` §5.5).

use hushwire::Account;
use hushwire::proto::relay::{FrameBody, MAX_PREKEYS_PER_UPLOAD};
use sqlx::SqliteConnection;

use crate::error::Result;
use crate::event::Event;
use crate::link::Link;
use crate::os::{now_ms, rng};
use crate::store;

use super::Client;

impl Client {
    pub(super) async fn save_account(
        &self,
        c: &mut SqliteConnection,
        account: &Account,
    ) -> Result<()> {
        store::put_meta(
            c,
            "account",
            &account.seal(&self.inner.storage_key, &mut rng()),
        )
        .await
    }

    pub(super) async fn publish_signed_prekeys(&self, link: &Link) -> Result<()> {
        let (signed, kem) = {
            let state = self.inner.state.lock().await;
            (
                state.account.signed_prekey().cloned(),
                state.account.last_resort_kem_prekey().cloned(),
            )
        };
        link.call(FrameBody::UploadPreKeys {
            signed_prekey: signed,
            last_resort_kem_prekey: kem,
            one_time_prekeys: Vec::new(),
            one_time_kem_prekeys: Vec::new(),
        })
        .await
        .map(drop)
    }

    /// Rotates the signed prekey and last-resort ML-KEM prekey when they are too old.
    pub(super) async fn rotate_if_due(&self, link: &Link) -> Result<()> {
        let now_s = now_ms() / 1000;
        let due = {
            let mut state = self.inner.state.lock().await;
            let created = state.account.signed_prekey_created_at().unwrap_or(0);
            if now_s.saturating_sub(created) < self.inner.options.signed_prekey_max_age.as_secs() {
                false
            } else {
                let mut account = state.account.clone();
                let mut rng = rng();
                account.rotate_signed_prekey(now_s, &mut rng);
                account.rotate_last_resort_kem_prekey(&mut rng);
                let mut c = self.inner.db.acquire().await?;
                // Stored before it is published: a crash cannot leave the relay handing out a
                // prekey whose secret is lost.
                self.save_account(&mut c, &account).await?;
                state.account = account;
                true
            }
        };
        if due {
            self.publish_signed_prekeys(link).await?;
            self.emit(Event::SignedPreKeyRotated);
        }
        Ok(())
    }

    /// Tops one-time prekeys up to the target when the relay reports fewer than a quarter left.
    pub(super) async fn replenish(
        &self,
        link: &Link,
        one_time: u32,
        kem_one_time: u32,
    ) -> Result<()> {
        let target = self.inner.options.one_time_prekeys;
        if one_time >= target / 4 && kem_one_time >= target / 4 {
            return Ok(());
        }
        // The relay's counts are not trusted alone: a relay reporting zero again and again
        // must not grow the account without bound. Secrets kept locally (published, or handed
        // out and not yet used by a prekey message) stay at most twice the target: to make room
        // for the new ones, the oldest are retired — a relay hands out the lowest ids first, so
        // those are keys handed out whose prekey message never came (a drained device must
        // still be able to publish). A late prekey message naming one heals (§5.13).
        let (x_left, k_left) = (
            target.saturating_sub(one_time),
            target.saturating_sub(kem_one_time),
        );
        if x_left == 0 && k_left == 0 {
            return Ok(());
        }
        {
            let mut state = self.inner.state.lock().await;
            let (local_x, local_k) = state.account.one_time_prekey_counts();
            let keep = |local: usize, new: u32| {
                let bound = 2 * target as usize;
                local.min(bound.saturating_sub(new as usize))
            };
            let (keep_x, keep_k) = (keep(local_x, x_left), keep(local_k, k_left));
            if keep_x < local_x || keep_k < local_k {
                let mut account = state.account.clone();
                let retired = account.retire_oldest_one_time_prekeys(keep_x, keep_k);
                let mut c = self.inner.db.acquire().await?;
                self.save_account(&mut c, &account).await?;
                state.account = account;
                tracing::info!(
                    one_time = retired.0,
                    kem_one_time = retired.1,
                    "retired one-time prekeys handed out and never used"
                );
            }
        }
        let (mut x_left, mut k_left) = (x_left, k_left);
        let (mut x_sent, mut k_sent) = (0, 0);
        while x_left > 0 || k_left > 0 {
            let chunk = u32::try_from(MAX_PREKEYS_PER_UPLOAD).unwrap_or(100);
            let (x, k) = (x_left.min(chunk), k_left.min(chunk));
            let (ones, kems) = {
                let mut state = self.inner.state.lock().await;
                let mut account = state.account.clone();
                let mut rng = rng();
                let ones = account.generate_one_time_prekeys(x as usize, &mut rng);
                let kems = account.generate_one_time_kem_prekeys(k as usize, &mut rng);
                let mut c = self.inner.db.acquire().await?;
                self.save_account(&mut c, &account).await?;
                state.account = account;
                (ones, kems)
            };
            link.call(FrameBody::UploadPreKeys {
                signed_prekey: None,
                last_resort_kem_prekey: None,
                one_time_prekeys: ones,
                one_time_kem_prekeys: kems,
            })
            .await?;
            x_left -= x;
            k_left -= k;
            x_sent += x;
            k_sent += k;
        }
        self.emit(Event::PreKeysReplenished {
            one_time: x_sent,
            kem_one_time: k_sent,
        });
        Ok(())
    }
}
