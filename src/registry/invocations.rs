//! Async invocations: the durable queue in the `invocations` table. A
//! request is accepted once its row is committed; runners claim due rows,
//! and each attempt's outcome decides what happens next:
//!
//! * 2xx/3xx: `succeeded`; 4xx other than 408 and 429: `failed` (the
//!   request itself is wrong, another attempt would fail the same way);
//! * 5xx, 408, 429, a timeout or an unreachable gateway (status 0): queued
//!   again after an exponential backoff with jitter, until `max_attempts`
//!   or the invocation's deadline (`max_age`); then `dead`, kept for
//!   inspection.
//!
//! Delivery is at least once: a row still `running` when corefn stopped is
//! queued again at start ([`requeue_running`]).
//!
//! This module stores and decides; the intake and the runners that call
//! the gateway are the control plane's. Blocking SQLite: never on a core.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::RegistryError;

/// Attempts of an invocation when its function says nothing.
pub const MAX_ATTEMPTS_DEFAULT: u32 = 3;
pub const MAX_ATTEMPTS_MAX: u32 = 100;
/// How long an invocation may wait for success when its function says
/// nothing; past it, it is dead whatever its attempts.
pub const MAX_AGE_DEFAULT: Duration = Duration::from_secs(6 * 60 * 60);
/// Retry delays: `RETRY_DELAY_BASE · 2^(attempt-1)`, capped, then a random
/// half of it taken off (jitter, so retries of a burst spread out).
pub const RETRY_DELAY_BASE: Duration = Duration::from_secs(1);
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(5 * 60);
/// What of a result is kept.
pub const RESULT_BODY_BYTES_MAX: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Running,
    Succeeded,
    Failed,
    Dead,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        [
            State::Queued,
            State::Running,
            State::Succeeded,
            State::Failed,
            State::Dead,
        ]
        .into_iter()
        .find(|s| s.name() == text)
    }
}

/// The call an invocation makes, as queued and as claimed.
#[derive(Debug, Clone)]
pub struct QueuedRequest {
    pub function: String,
    pub method: String,
    /// The request target as the gateway will see it (`/fn/NAME...`).
    pub path: String,
    /// `[[name, value], ...]` as JSON: the headers the call carries.
    pub headers_json: String,
    pub body: Vec<u8>,
    pub callback_url: Option<String>,
}

/// A request to queue.
pub struct NewInvocation {
    pub id: String,
    pub request: QueuedRequest,
    pub max_attempts: u32,
    pub max_age: Duration,
}

/// A claimed invocation: what a runner sends.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub request: QueuedRequest,
    /// This attempt's number, from 1.
    pub attempt: u32,
}

/// What one attempt got back; status 0 when there was no answer.
pub struct Outcome<'a> {
    pub status: u16,
    pub headers_json: &'a str,
    pub body: &'a [u8],
    pub error: Option<&'a str>,
}

/// Where an invocation went after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Done(State),
    RetryAt { unix_us: u64 },
}

/// Queues `batch` in one transaction: one commit (one fsync under
/// `synchronous = FULL`) for all of them.
pub fn enqueue<'a>(
    connection: &mut Connection,
    batch: impl IntoIterator<Item = &'a NewInvocation>,
    now_us: u64,
) -> Result<(), RegistryError> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO invocations (id, function, method, path, headers, body, callback_url,
                 state, max_attempts, created_us, updated_us, next_attempt_us, deadline_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?9, ?9, ?9, ?10)",
        )?;
        for new in batch {
            assert!(
                new.max_attempts >= 1,
                "an invocation has at least one attempt"
            );
            let deadline_us = now_us.saturating_add(new.max_age.as_micros() as u64);
            let request = &new.request;
            insert.execute(params![
                new.id,
                request.function,
                request.method,
                request.path,
                request.headers_json,
                request.body,
                request.callback_url,
                new.max_attempts,
                now_us as i64,
                deadline_us as i64,
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Invocations not yet finished: what the queue bound counts.
pub fn pending(connection: &Connection) -> Result<u64, RegistryError> {
    let n: i64 = connection.query_row(
        "SELECT count(*) FROM invocations WHERE state IN ('queued', 'running')",
        [],
        |row| row.get(0),
    )?;
    Ok(n.max(0) as u64)
}

/// When the earliest queued invocation is due, if any is queued: a read,
/// so an idle queue costs no write.
pub fn next_due_us(connection: &Connection) -> Result<Option<u64>, RegistryError> {
    let due: Option<i64> = connection.query_row(
        "SELECT min(next_attempt_us) FROM invocations WHERE state = 'queued'",
        [],
        |row| row.get(0),
    )?;
    Ok(due.map(|us| us.max(0) as u64))
}

/// Marks up to `limit` due invocations `running` and returns them, oldest
/// due first.
pub fn claim_due(
    connection: &mut Connection,
    now_us: u64,
    limit: usize,
) -> Result<Vec<Claimed>, RegistryError> {
    let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let claimed = {
        let mut select = tx.prepare_cached(
            "SELECT id, function, method, path, headers, body, callback_url, attempts
             FROM invocations WHERE state = 'queued' AND next_attempt_us <= ?1
             ORDER BY next_attempt_us LIMIT ?2",
        )?;
        let rows = select.query_map(params![now_us as i64, limit as i64], |row| {
            Ok(Claimed {
                id: row.get(0)?,
                request: QueuedRequest {
                    function: row.get(1)?,
                    method: row.get(2)?,
                    path: row.get(3)?,
                    headers_json: row.get(4)?,
                    body: row.get(5)?,
                    callback_url: row.get(6)?,
                },
                attempt: row.get::<_, i64>(7)?.max(0) as u32 + 1,
            })
        })?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    {
        let mut update = tx.prepare_cached(
            "UPDATE invocations SET state = 'running', attempts = attempts + 1, updated_us = ?2
             WHERE id = ?1",
        )?;
        for c in &claimed {
            update.execute(params![c.id, now_us as i64])?;
        }
    }
    tx.commit()?;
    Ok(claimed)
}

/// The delay before attempt `attempt + 1` after attempt `attempt` failed;
/// `random` is any 64 random bits (the jitter).
pub fn retry_delay(attempt: u32, random: u64) -> Duration {
    let shift = attempt.saturating_sub(1).min(20);
    let full = RETRY_DELAY_BASE
        .saturating_mul(1u32 << shift)
        .min(RETRY_DELAY_MAX);
    let full_us = full.as_micros() as u64;
    // Between half and all of the full delay.
    Duration::from_micros(full_us / 2 + random % (full_us / 2 + 1))
}

/// Whether an attempt that got `status` should be tried again.
pub fn is_retryable(status: u16) -> bool {
    status == 0 || status == 408 || status == 429 || status >= 500
}

/// Records an attempt's outcome and moves the invocation on.
pub fn finish(
    connection: &Connection,
    id: &str,
    outcome: &Outcome<'_>,
    now_us: u64,
    random: u64,
) -> Result<Next, RegistryError> {
    let (attempts, max_attempts, deadline_us): (i64, i64, i64) = connection
        .query_row(
            "SELECT attempts, max_attempts, deadline_us FROM invocations WHERE id = ?1",
            [id],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?
        .ok_or_else(|| RegistryError::Invalid(format!("no invocation {id}")))?;
    let attempts = attempts.max(0) as u32;
    let next = if !is_retryable(outcome.status) {
        Next::Done(if outcome.status < 400 {
            State::Succeeded
        } else {
            State::Failed
        })
    } else {
        let at_us = now_us.saturating_add(retry_delay(attempts, random).as_micros() as u64);
        if attempts >= max_attempts.max(1) as u32 || at_us > deadline_us.max(0) as u64 {
            Next::Done(State::Dead)
        } else {
            Next::RetryAt { unix_us: at_us }
        }
    };
    let (state, next_attempt_us) = match next {
        Next::Done(state) => (state, now_us),
        Next::RetryAt { unix_us } => (State::Queued, unix_us),
    };
    let truncated = outcome.body.len() > RESULT_BODY_BYTES_MAX;
    let body = &outcome.body[..outcome.body.len().min(RESULT_BODY_BYTES_MAX)];
    connection.execute(
        "UPDATE invocations SET state = ?2, updated_us = ?3, next_attempt_us = ?4, status = ?5,
             result_headers = ?6, result_body = ?7, result_truncated = ?8, error = ?9
         WHERE id = ?1",
        params![
            id,
            state.name(),
            now_us as i64,
            next_attempt_us as i64,
            (outcome.status != 0).then_some(outcome.status),
            outcome.headers_json,
            body,
            truncated,
            outcome.error,
        ],
    )?;
    Ok(next)
}

/// At start: what was `running` when corefn stopped is queued again (at
/// least once: such an attempt may have run).
pub fn requeue_running(connection: &Connection, now_us: u64) -> Result<usize, RegistryError> {
    Ok(connection.execute(
        "UPDATE invocations SET state = 'queued', next_attempt_us = ?1, updated_us = ?1
         WHERE state = 'running'",
        [now_us as i64],
    )?)
}

/// An invocation as stored.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub id: String,
    pub function: String,
    pub state: State,
    pub attempts: u32,
    pub max_attempts: u32,
    pub created_us: u64,
    pub updated_us: u64,
    pub next_attempt_us: u64,
    pub status: Option<u16>,
    pub result_headers_json: Option<String>,
    pub result_body: Option<Vec<u8>>,
    pub result_truncated: bool,
    pub error: Option<String>,
}

pub fn get(connection: &Connection, id: &str) -> Result<Option<Invocation>, RegistryError> {
    Ok(connection
        .query_row(
            "SELECT id, function, state, attempts, max_attempts, created_us, updated_us,
                    next_attempt_us, status, result_headers, result_body, result_truncated, error
             FROM invocations WHERE id = ?1",
            [id],
            invocation_of_row,
        )
        .optional()?)
}

fn invocation_of_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Invocation> {
    let state: String = row.get(2)?;
    Ok(Invocation {
        id: row.get(0)?,
        function: row.get(1)?,
        state: State::parse(&state).unwrap_or(State::Dead),
        attempts: row.get::<_, i64>(3)?.max(0) as u32,
        max_attempts: row.get::<_, i64>(4)?.max(0) as u32,
        created_us: row.get::<_, i64>(5)?.max(0) as u64,
        updated_us: row.get::<_, i64>(6)?.max(0) as u64,
        next_attempt_us: row.get::<_, i64>(7)?.max(0) as u64,
        status: row
            .get::<_, Option<i64>>(8)?
            .map(|s| s.clamp(0, 999) as u16),
        result_headers_json: row.get(9)?,
        result_body: row.get(10)?,
        result_truncated: row.get(11)?,
        error: row.get(12)?,
    })
}

/// Invocations newest first, without their result bodies: at most
/// `limit`, of one function and/or in one state when asked.
pub fn list(
    connection: &Connection,
    function: Option<&str>,
    state: Option<State>,
    limit: usize,
) -> Result<Vec<Invocation>, RegistryError> {
    let mut select = connection.prepare_cached(
        "SELECT id, function, state, attempts, max_attempts, created_us, updated_us,
                next_attempt_us, status, result_headers, NULL, result_truncated, error
         FROM invocations
         WHERE (?1 IS NULL OR function = ?1) AND (?2 IS NULL OR state = ?2)
         ORDER BY created_us DESC, id DESC LIMIT ?3",
    )?;
    let rows = select.query_map(
        params![function, state.map(State::name), limit as i64],
        invocation_of_row,
    )?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A function's retry policy for its async invocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AsyncPolicy {
    pub max_attempts: u32,
    pub max_age_s: u64,
}

impl Default for AsyncPolicy {
    fn default() -> AsyncPolicy {
        AsyncPolicy {
            max_attempts: MAX_ATTEMPTS_DEFAULT,
            max_age_s: MAX_AGE_DEFAULT.as_secs(),
        }
    }
}

impl AsyncPolicy {
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_s)
    }

    pub fn validate(&self) -> Result<(), RegistryError> {
        if !(1..=MAX_ATTEMPTS_MAX).contains(&self.max_attempts) {
            return Err(RegistryError::Invalid(format!(
                "async.max_attempts {} is outside 1..={MAX_ATTEMPTS_MAX}",
                self.max_attempts
            )));
        }
        if !(1..=MAX_AGE_S_MAX).contains(&self.max_age_s) {
            return Err(RegistryError::Invalid(format!(
                "async.max_age_s {} is outside 1..={MAX_AGE_S_MAX}",
                self.max_age_s
            )));
        }
        Ok(())
    }
}

/// The longest an invocation may be kept trying: a week.
pub const MAX_AGE_S_MAX: u64 = 7 * 24 * 60 * 60;

/// The policy `function` has set, or the defaults.
pub fn policy_of(connection: &Connection, function: &str) -> Result<AsyncPolicy, RegistryError> {
    let stored: Option<(Option<i64>, Option<i64>)> = connection
        .query_row(
            "SELECT async_max_attempts, async_max_age_s FROM function_settings WHERE name = ?1",
            [function],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let defaults = AsyncPolicy::default();
    let (attempts, age) = stored.unwrap_or((None, None));
    Ok(AsyncPolicy {
        max_attempts: attempts.map_or(defaults.max_attempts, |n| {
            n.clamp(1, i64::from(MAX_ATTEMPTS_MAX)) as u32
        }),
        max_age_s: age.map_or(defaults.max_age_s, |s| s.max(1) as u64),
    })
}

/// Sets (or with `None` clears back to the defaults) the policy of
/// `function`, which must exist. Queued invocations keep theirs.
pub fn set_policy(
    connection: &Connection,
    function: &str,
    policy: Option<AsyncPolicy>,
    now: i64,
) -> Result<(), RegistryError> {
    if let Some(policy) = &policy {
        policy.validate()?;
    }
    let exists: Option<i64> = connection
        .query_row(
            "SELECT 1 FROM registry_functions WHERE name = ?1",
            [function],
            |row| row.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Err(RegistryError::NotFound(function.to_string()));
    }
    connection.execute(
        "INSERT INTO function_settings (name, async_max_attempts, async_max_age_s, updated)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name) DO UPDATE SET async_max_attempts = excluded.async_max_attempts,
             async_max_age_s = excluded.async_max_age_s, updated = excluded.updated",
        params![
            function,
            policy.map(|p| p.max_attempts),
            policy.map(|p| p.max_age_s as i64),
            now
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Connection {
        let mut connection = Connection::open_in_memory().expect("sqlite");
        crate::schema::migrate(&mut connection).expect("schema");
        connection
    }

    fn new(id: &str, max_attempts: u32) -> NewInvocation {
        NewInvocation {
            id: id.into(),
            request: QueuedRequest {
                function: "greet".into(),
                method: "POST".into(),
                path: "/fn/greet".into(),
                headers_json: "[]".into(),
                body: b"{}".to_vec(),
                callback_url: None,
            },
            max_attempts,
            max_age: MAX_AGE_DEFAULT,
        }
    }

    fn answer(status: u16) -> Outcome<'static> {
        Outcome {
            status,
            headers_json: "[]",
            body: b"result",
            error: None,
        }
    }

    #[test]
    fn a_failed_attempt_is_retried_later_then_dead_after_max_attempts() {
        let mut q = queue();
        enqueue(&mut q, &[new("a", 2)], 1_000).expect("enqueue");
        assert_eq!(pending(&q).expect("pending"), 1);
        let claimed = claim_due(&mut q, 1_000, 10).expect("claim");
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].attempt, 1);
        // Claimed rows are not claimed twice.
        assert!(claim_due(&mut q, 1_000, 10).expect("claim").is_empty());
        let Next::RetryAt { unix_us } = finish(&q, "a", &answer(503), 2_000, 7).expect("finish")
        else {
            panic!("a 503 is retried");
        };
        assert!(unix_us >= 2_000 + RETRY_DELAY_BASE.as_micros() as u64 / 2);
        assert!(claim_due(&mut q, unix_us - 1, 10)
            .expect("claim")
            .is_empty());
        let again = claim_due(&mut q, unix_us, 10).expect("claim");
        assert_eq!(again[0].attempt, 2);
        assert_eq!(
            finish(&q, "a", &answer(500), unix_us, 7).expect("finish"),
            Next::Done(State::Dead)
        );
        let dead = get(&q, "a").expect("get").expect("row");
        assert_eq!(
            (dead.state, dead.attempts, dead.status),
            (State::Dead, 2, Some(500))
        );
        assert_eq!(dead.result_body.as_deref(), Some(&b"result"[..]));
        assert_eq!(pending(&q).expect("pending"), 0);
    }

    #[test]
    fn success_and_client_errors_are_final() {
        let mut q = queue();
        enqueue(&mut q, &[new("ok", 3), new("bad", 3)], 1).expect("enqueue");
        assert_eq!(claim_due(&mut q, 1, 10).expect("claim").len(), 2);
        assert_eq!(
            finish(&q, "ok", &answer(200), 2, 0).expect("finish"),
            Next::Done(State::Succeeded)
        );
        assert_eq!(
            finish(&q, "bad", &answer(404), 2, 0).expect("finish"),
            Next::Done(State::Failed)
        );
        assert!(is_retryable(0) && is_retryable(429) && is_retryable(504));
        assert!(!is_retryable(400) && !is_retryable(201));
    }

    #[test]
    fn a_run_cut_by_a_stop_is_queued_again_at_start() {
        let mut q = queue();
        enqueue(&mut q, &[new("cut", 3)], 1).expect("enqueue");
        assert_eq!(claim_due(&mut q, 1, 10).expect("claim").len(), 1);
        assert_eq!(requeue_running(&q, 5).expect("requeue"), 1);
        let again = claim_due(&mut q, 5, 10).expect("claim");
        assert_eq!((again.len(), again[0].attempt), (1, 2));
    }

    #[test]
    fn the_deadline_ends_retries_before_max_attempts() {
        let mut q = queue();
        let mut short = new("old", 50);
        short.max_age = Duration::from_millis(10);
        enqueue(&mut q, &[short], 0).expect("enqueue");
        claim_due(&mut q, 0, 1).expect("claim");
        assert_eq!(
            finish(&q, "old", &answer(502), 1, 0).expect("finish"),
            Next::Done(State::Dead)
        );
    }

    #[test]
    fn retry_delays_grow_with_jitter_and_a_cap() {
        for attempt in 1..40 {
            let full = RETRY_DELAY_BASE
                .saturating_mul((1u32 << attempt.min(21)) >> 1)
                .min(RETRY_DELAY_MAX);
            for random in [0, 1, u64::MAX / 3, u64::MAX] {
                let delay = retry_delay(attempt, random);
                assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
            }
        }
        assert!(retry_delay(3, 0) > retry_delay(1, u64::MAX));
    }
}
