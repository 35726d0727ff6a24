//! The order side of checkout: place an order (idempotently, with its stock reserved and
//! undone if the order cannot be stored), apply a payment's outcome exactly once, cancel,
//! and expire. The handlers and the benchmark's database replay call these same
//! functions; the product service is reached only through [`Stock`].

pub mod machine;

use std::future::Future;
use std::time::Duration;

use mercato_contract::wire::{
    EventResult, LineItem, Order, OrderStatus, PaymentEvent, PaymentStatus, Reservation,
    ReservationStatus, ReserveRequest,
};
use mercato_kit::idempotency::{self, Created};
use mercato_kit::items;
use mercato_kit::{ApiError, FieldError};
use sqlx::PgPool;
use uuid::Uuid;

pub use machine::{Event, Transition, transition};

use crate::orders::{self, NewOrder};

/// The product service's stock, as checkout needs it. Every call is idempotent per order
/// id. Errors are the product service's own answers ("Not enough stock", naming the
/// line) or its unavailability, passed on to the client as they are.
pub trait Stock: Sync {
    fn reserve(
        &self,
        request: &ReserveRequest,
    ) -> impl Future<Output = Result<Reservation, ApiError>> + Send;
    fn commit(&self, order_id: Uuid) -> impl Future<Output = Result<Reservation, ApiError>> + Send;
    fn release(&self, order_id: Uuid)
    -> impl Future<Output = Result<Reservation, ApiError>> + Send;
}

/// Why a checkout step did not happen.
#[derive(Debug)]
pub enum CheckoutError {
    /// No such order, or not one the caller may see.
    NotFound,
    /// A user token whose subject is not a user id.
    NotAUser,
    /// The idempotency key was used before with other items.
    KeyReused,
    /// A retry found its reservation expired since the first attempt.
    ReservationExpired,
    /// The order is not PENDING any more, so it cannot be cancelled.
    NotPending(OrderStatus),
    /// The product service refused or is unavailable.
    Product(ApiError),
    /// A payment event that does not fit its order (an outcome events never carry, an
    /// amount that is not the total): refused, naming the field, and nothing recorded.
    BadEvent(FieldError),
    /// A row that was just there is gone.
    Vanished,
    Database(sqlx::Error),
}

impl From<sqlx::Error> for CheckoutError {
    fn from(e: sqlx::Error) -> Self {
        CheckoutError::Database(e)
    }
}

/// Who asks: admins see every order, customers their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer {
    Admin,
    Customer(Uuid),
    /// A user token whose subject is no user id: refused once an order is to be shown.
    NotAUser,
}

impl Viewer {
    /// Whose orders this viewer may see: `None` for everyone's.
    pub fn owner(self) -> Result<Option<Uuid>, CheckoutError> {
        match self {
            Viewer::Admin => Ok(None),
            Viewer::Customer(id) => Ok(Some(id)),
            Viewer::NotAUser => Err(CheckoutError::NotAUser),
        }
    }

    /// Whether this viewer may see an order of `owner`; someone else's order is "not
    /// found", exactly like a missing one.
    pub fn may_see(self, owner: Uuid) -> Result<(), CheckoutError> {
        match self.owner()? {
            Some(me) if me != owner => Err(CheckoutError::NotFound),
            _ => Ok(()),
        }
    }
}

/// What a customer asks for; the lines are validated (`items::validate`) at the edge.
#[derive(Debug, Clone)]
pub struct PlaceOrder {
    pub user: Uuid,
    pub idempotency_key: Option<String>,
    pub items: Vec<LineItem>,
}

/// A fingerprint of what was asked, so a reused idempotency key with other items is
/// caught: the lines sorted by product, hashed.
pub fn request_hash(items: &[LineItem]) -> String {
    let canonical = items::canonical(items)
        .iter()
        .map(|(id, q)| format!("{id}:{q}"))
        .collect::<Vec<_>>()
        .join(",");
    idempotency::digest(&canonical)
}

fn replay(order: Order, asked: &str, stored: &str) -> Result<Created<Order>, CheckoutError> {
    idempotency::replay(order, stored, asked).map_err(|_| CheckoutError::KeyReused)
}

/// Places an order: stock for every line is reserved at once and the order is priced by
/// the reservation, never by the client. With an idempotency key the order id follows
/// from the key, so a retry (even a concurrent one) finds the first order and gets it
/// back; without one, every call is a new order. If the order cannot be stored, its
/// reservation is released again, so no stock is held for an order that does not exist.
pub async fn place_order(
    db: &PgPool,
    stock: &impl Stock,
    ttl: Duration,
    request: PlaceOrder,
) -> Result<Created<Order>, CheckoutError> {
    let key = request.idempotency_key.as_deref();
    let hash = request_hash(&request.items);
    let order_id = idempotency::resource_id(request.user, key);
    if key.is_some()
        && let Some((order, stored)) = orders::placed(&mut *db.acquire().await?, order_id).await?
    {
        return replay(order, &hash, &stored);
    }

    let reserve = ReserveRequest {
        order_id,
        items: request.items,
    };
    let reservation = stock
        .reserve(&reserve)
        .await
        .map_err(CheckoutError::Product)?;
    if reservation.status != ReservationStatus::Reserved {
        // A retry of an attempt that died after reserving, whose reservation has since expired.
        return Err(CheckoutError::ReservationExpired);
    }
    let new = NewOrder {
        id: order_id,
        user_id: request.user,
        idempotency_key: key,
        request_hash: &hash,
        reservation: &reservation,
        ttl,
    };
    // One statement stores the order with its lines and returns it, so placing it is one
    // commit and no read-back.
    let inserted = match db.acquire().await {
        Ok(mut conn) => orders::insert(&mut conn, &new).await,
        Err(e) => Err(e),
    };
    match inserted {
        Ok(Some(order)) => {
            tracing::info!(order = %order_id, total = reservation.total, "order placed");
            Ok(Created::New(order))
        }
        Ok(None) => {
            // A concurrent request with the same key stored it first.
            let (order, stored) = orders::placed(&mut *db.acquire().await?, order_id)
                .await?
                .ok_or(CheckoutError::Vanished)?;
            replay(order, &hash, &stored)
        }
        Err(e) => {
            // Do not hold stock for an order that was never stored.
            if let Err(release) = stock.release(order_id).await {
                tracing::warn!(order = %order_id, error = %release, "could not release; the reservation will expire");
            }
            Err(e.into())
        }
    }
}

/// Applies a payment's outcome exactly once (a redelivered event changes nothing): a
/// success moves a PENDING order to PAID and commits its reservation first; a decline
/// leaves the order as it is. An event whose amount is not the order's total, or whose
/// outcome is not one events carry, is refused and changes nothing.
///
/// The order's row stays locked while the product service commits, so a cancel or an
/// expiry waits for the payment and then finds the order PAID (and is refused), or comes
/// first and the success is refused here: the payment service refunds a success that left
/// the order anything but PAID. If the product service cannot commit for now, nothing is
/// recorded and the error goes back, so the sender delivers the event again later; if it
/// answers 409 (its reservation ran out and the stock went back), that is final: the order
/// expires and the success is refused.
pub async fn apply_payment(
    db: &PgPool,
    stock: &impl Stock,
    order_id: Uuid,
    event: &PaymentEvent,
) -> Result<EventResult, CheckoutError> {
    let happened = match event.outcome {
        PaymentStatus::Succeeded => Event::PaymentSucceeded,
        PaymentStatus::Declined => Event::PaymentDeclined,
        PaymentStatus::Refunded => {
            return Err(CheckoutError::BadEvent(FieldError::new(
                "outcome",
                "must be SUCCEEDED or DECLINED",
            )));
        }
    };
    let mut tx = db.begin().await?;
    let order = orders::row(&mut tx, order_id, true)
        .await?
        .ok_or(CheckoutError::NotFound)?;
    if event.amount != order.total {
        tracing::error!(order = %order_id, paid = event.amount, total = order.total, "payment amount differs from the order total: refused");
        return Err(CheckoutError::BadEvent(FieldError::new(
            "amount",
            format!(
                "must be the order total, {} {}",
                order.total, order.currency
            ),
        )));
    }
    // Recording the event first is the dedupe: a redelivery finds it recorded and changes
    // nothing. The row lock above keeps two deliveries of one event from racing here, and
    // the primary key would refuse the second anyway.
    let step = transition(order.status, happened);
    let moves = matches!(step, Transition::To(_));
    if !orders::record_payment_event(
        &mut tx,
        event.event_id,
        order_id,
        event.payment_id,
        event.outcome,
        moves,
    )
    .await?
    {
        return Ok(EventResult {
            applied: false,
            status: order.status,
        });
    }
    let (applied, status) = match step {
        Transition::To(status) => match stock.commit(order_id).await {
            Ok(_) => {
                orders::set_status(&mut tx, order_id, status).await?;
                (true, status)
            }
            Err(e) if e.status == axum::http::StatusCode::CONFLICT => {
                let expired = expired_status();
                tracing::warn!(order = %order_id, payment = %event.payment_id, error = %e,
                    "the reservation is gone: the order expires and the payment is refused");
                orders::set_status(&mut tx, order_id, expired).await?;
                orders::mark_released(&mut tx, order_id).await?;
                orders::payment_event_not_applied(&mut tx, event.event_id).await?;
                (false, expired)
            }
            // Rolled back, the event included, so a redelivery tries again.
            Err(e) => return Err(CheckoutError::Product(e)),
        },
        Transition::Stays => (false, order.status),
        Transition::Refused => {
            tracing::warn!(order = %order_id, payment = %event.payment_id, status = %order.status,
                "payment succeeded for an order that is no longer pending: refused, to be refunded");
            (false, order.status)
        }
    };
    tx.commit().await?;
    tracing::info!(order = %order_id, outcome = %event.outcome, applied, "payment event");
    Ok(EventResult { applied, status })
}

/// Cancels a PENDING order and returns its stock. The cancellation stands even if the
/// product service is down: the sweep keeps retrying the release, and the reservation's
/// own expiry is the last resort.
pub async fn cancel(
    db: &PgPool,
    stock: &impl Stock,
    viewer: Viewer,
    id: Uuid,
) -> Result<Order, CheckoutError> {
    let mut tx = db.begin().await?;
    let row = orders::row(&mut tx, id, true)
        .await?
        .ok_or(CheckoutError::NotFound)?;
    viewer.may_see(row.user_id)?;
    match transition(row.status, Event::Cancel) {
        Transition::To(status) => orders::set_status(&mut tx, id, status).await?,
        Transition::Stays | Transition::Refused => {
            return Err(CheckoutError::NotPending(row.status));
        }
    }
    // Read in the transaction that cancels it: the release that follows changes nothing
    // an order shows.
    let order = orders::get(&mut tx, id)
        .await?
        .ok_or(CheckoutError::Vanished)?;
    tx.commit().await?;
    tracing::info!(order = %id, "order cancelled");
    release_stock(db, stock, id, 0).await;
    Ok(order)
}

/// Returns a cancelled or expired order's stock; on failure the sweep retries later,
/// `attempts` failures after the first with a longer wait. A 404 (nothing was reserved)
/// or a 409 (the reservation was committed, so there is nothing to give back) is final.
pub async fn release_stock(db: &PgPool, stock: &impl Stock, id: Uuid, attempts: i32) {
    let result = stock.release(id).await;
    let recorded = async {
        let mut conn = db.acquire().await?;
        match &result {
            Ok(_) => orders::mark_released(&mut conn, id).await,
            Err(e) if e.status == axum::http::StatusCode::NOT_FOUND => {
                orders::mark_released(&mut conn, id).await
            }
            Err(e) if e.status == axum::http::StatusCode::CONFLICT => {
                tracing::error!(order = %id, error = %e, "stock of a cancelled order was committed: not retried");
                orders::mark_released(&mut conn, id).await
            }
            Err(e) => {
                let wait = release_backoff(attempts);
                tracing::warn!(order = %id, error = %e, retry_in = ?wait, "releasing stock failed; will retry");
                orders::release_failed(&mut conn, id, wait).await
            }
        }
    }
    .await;
    if let Err(e) = recorded {
        tracing::warn!(order = %id, error = %e, "the release's outcome was not recorded");
    }
}

/// Delay before release attempt `attempts + 2`: 1 s doubling, capped at 5 minutes (the
/// product service's own reservation expiry is the last resort anyway).
pub fn release_backoff(attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.clamp(0, 16)).unwrap_or(16);
    Duration::from_secs(1u64 << exp).min(Duration::from_secs(300))
}

/// Expires unpaid orders past their time, then returns the stock of every cancelled or
/// expired order whose release has not been confirmed yet and is due, at most `batch` of
/// each, soonest due first. Returns how many expired.
pub async fn sweep(db: &PgPool, stock: &impl Stock, batch: i64) -> Result<u64, sqlx::Error> {
    let (from, to) = (OrderStatus::Pending, expired_status());
    let expired = orders::expire_overdue(&mut *db.acquire().await?, from, to, batch).await?;
    let due = orders::claim_releases(
        &mut *db.acquire().await?,
        machine::RETURNS_STOCK,
        batch,
        orders::RELEASE_LEASE,
    )
    .await?;
    for (id, attempts) in due {
        release_stock(db, stock, id, attempts).await;
    }
    Ok(expired.len() as u64)
}

/// Where [`Event::Expire`] takes a pending order.
const fn expired_status() -> OrderStatus {
    match transition(OrderStatus::Pending, Event::Expire) {
        Transition::To(status) => status,
        Transition::Stays | Transition::Refused => OrderStatus::Pending,
    }
}
