//! Retention: which transcripts a policy says to destroy. Destroying means crypto-shredding:
//! deleting the transcript's key (and the exports that carry it) makes its records unreadable
//! even where copies of the sealed records survive, such as in backups.

use super::sealed::TranscriptId;

/// How long transcripts are kept after their last record (or their closing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Milliseconds to keep a transcript after its last activity.
    pub keep_for_ms: u64,
}

/// What retention needs to know about one transcript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TranscriptActivity {
    /// The transcript.
    pub id: TranscriptId,
    /// Time of its last record or closing, Unix milliseconds.
    pub last_activity_ms: u64,
    /// Under a legal hold: never expires while the hold lasts.
    pub legal_hold: bool,
}

impl RetentionPolicy {
    /// The transcripts past retention at `now_ms`, in the order given.
    pub fn expired(
        &self,
        transcripts: impl IntoIterator<Item = TranscriptActivity>,
        now_ms: u64,
    ) -> Vec<TranscriptId> {
        transcripts
            .into_iter()
            .filter(|t| {
                !t.legal_hold && now_ms.saturating_sub(t.last_activity_ms) > self.keep_for_ms
            })
            .map(|t| t.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_respects_age_and_legal_hold() {
        let policy = RetentionPolicy { keep_for_ms: 1000 };
        let t = |n: u8, at: u64, hold: bool| TranscriptActivity {
            id: TranscriptId([n; 16]),
            last_activity_ms: at,
            legal_hold: hold,
        };
        let list = [
            t(1, 0, false),
            t(2, 0, true),
            t(3, 5000, false),
            t(4, 3999, false),
        ];
        assert_eq!(
            policy.expired(list, 5000),
            vec![TranscriptId([1; 16]), TranscriptId([4; 16])]
        );
    }
}
