//! The payment side of checkout: pay an order (the caller's own, PENDING, for exactly its
//! total), record the payment and its outcome's event in one transaction, idempotently.
//! The handler and the benchmark's database replay call [`pay`]; the order service is
//! reached only through [`Orders`].

use std::future::Future;

use mercato_contract::wire::{EventResult, Order, OrderStatus, PaymentEvent, PaymentStatus};
use mercato_kit::ApiError;
use mercato_kit::idempotency::{self, Created};
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::outbox;
use crate::payments::{self, NewPayment, Payment};

/// The order service, as payment needs it. Errors are the order service's own answers
/// or its unavailability.
pub trait Orders: Send + Sync {
    /// The order as its service stores it.
    fn order(&self, id: Uuid) -> impl Future<Output = Result<Order, ApiError>> + Send;
    /// Hands a payment's outcome to the order service (the outbox's delivery).
    fn deliver(
        &self,
        order_id: Uuid,
        event: &PaymentEvent,
    ) -> impl Future<Output = Result<EventResult, ApiError>> + Send;
}

/// The test card's two behaviours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `fake-card`: succeeds.
    FakeCard,
    /// `fake-card-declined`: is declined.
    FakeCardDeclined,
}

impl Method {
    pub const ALL: [Method; 2] = [Method::FakeCard, Method::FakeCardDeclined];

    pub const fn as_str(self) -> &'static str {
        match self {
            Method::FakeCard => "fake-card",
            Method::FakeCardDeclined => "fake-card-declined",
        }
    }

    pub fn parse(text: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.as_str() == text)
    }

    /// What paying with this method comes to.
    pub const fn outcome(self) -> PaymentStatus {
        match self {
            Method::FakeCard => PaymentStatus::Succeeded,
            Method::FakeCardDeclined => PaymentStatus::Declined,
        }
    }
}

/// A payment a customer asks for, its fields checked at the edge.
#[derive(Debug, Clone)]
pub struct Pay {
    pub user: Uuid,
    pub idempotency_key: Option<String>,
    pub order_id: Uuid,
    /// Minor units, positive.
    pub amount: i64,
    pub method: Method,
}

impl Pay {
    /// The fingerprint a retry with the same key must match. Stored as it is (not
    /// hashed), as it always was, so payments made before still replay.
    pub fn fingerprint(&self) -> String {
        format!("{}:{}:{}", self.order_id, self.amount, self.method.as_str())
    }
}

/// Why a payment was not taken.
#[derive(Debug)]
pub enum PaymentError {
    /// No such order, or someone else's.
    OrderNotFound,
    /// The order is not PENDING.
    OrderUnavailable(OrderStatus),
    /// Another payment for the order succeeded first.
    AlreadyPaid,
    /// The amount is not the order's total.
    WrongAmount {
        total: i64,
        currency: String,
    },
    /// The idempotency key was used before for another payment.
    KeyReused,
    /// The order service refused or is unavailable.
    Order(ApiError),
    /// A row that was just there is gone.
    Vanished,
    Database(sqlx::Error),
}

impl From<sqlx::Error> for PaymentError {
    fn from(e: sqlx::Error) -> Self {
        PaymentError::Database(e)
    }
}

fn replay(payment: Payment, asked: &str) -> Result<Created<Payment>, PaymentError> {
    let stored = payment.request_hash.clone();
    idempotency::replay(payment, &stored, asked).map_err(|_| PaymentError::KeyReused)
}

/// Pays an order: checks it with the order service (owner, PENDING, total), records the
/// payment and the event carrying its outcome in one transaction, and wakes the outbox.
/// With an idempotency key, a retry (even a concurrent one) gets the first payment back.
pub async fn pay(
    db: &PgPool,
    orders: &impl Orders,
    outbox_wake: &Notify,
    request: Pay,
) -> Result<Created<Payment>, PaymentError> {
    let key = request.idempotency_key.as_deref();
    let hash = request.fingerprint();
    let payment_id = idempotency::resource_id(request.user, key);
    if key.is_some()
        && let Some(existing) = payments::get(&mut *db.acquire().await?, payment_id).await?
    {
        return replay(existing, &hash);
    }

    let order = orders.order(request.order_id).await.map_err(|e| {
        if e.status == axum::http::StatusCode::NOT_FOUND {
            PaymentError::OrderNotFound
        } else {
            PaymentError::Order(e)
        }
    })?;
    if order.user_id != request.user {
        return Err(PaymentError::OrderNotFound);
    }
    if order.status != OrderStatus::Pending {
        return Err(PaymentError::OrderUnavailable(order.status));
    }
    if request.amount != order.total {
        return Err(PaymentError::WrongAmount {
            total: order.total,
            currency: order.currency,
        });
    }

    let status = request.method.outcome();
    let new = NewPayment {
        id: payment_id,
        order_id: request.order_id,
        user_id: request.user,
        amount: request.amount,
        currency: &order.currency,
        method: request.method.as_str(),
        status,
        idempotency_key: key,
        request_hash: &hash,
    };
    let mut tx = db.begin().await?;
    let inserted = payments::insert(&mut tx, &new).await.map_err(|e| {
        if mercato_kit::error::is_unique_violation(&e, payments::ONE_SUCCESS_PER_ORDER) {
            PaymentError::AlreadyPaid
        } else {
            e.into()
        }
    })?;
    let Some(payment) = inserted else {
        // A concurrent request with the same key won the race; answer with its payment.
        drop(tx);
        let existing = payments::get(&mut *db.acquire().await?, payment_id)
            .await?
            .ok_or(PaymentError::Vanished)?;
        return replay(existing, &hash);
    };
    outbox::enqueue(
        &mut tx,
        payment_id,
        request.order_id,
        status,
        request.amount,
    )
    .await?;
    tx.commit().await?;
    outbox_wake.notify_one();
    tracing::info!(payment = %payment_id, order = %request.order_id, %status, "payment recorded");
    Ok(Created::New(payment))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fake_card_succeeds_and_its_declined_twin_does_not() {
        assert_eq!(Method::parse("fake-card"), Some(Method::FakeCard));
        assert_eq!(
            Method::parse("fake-card-declined").map(Method::outcome),
            Some(PaymentStatus::Declined)
        );
        assert_eq!(Method::FakeCard.outcome(), PaymentStatus::Succeeded);
        assert_eq!(Method::parse("visa"), None);
    }

    #[test]
    fn the_fingerprint_is_order_amount_and_method() {
        let pay = Pay {
            user: Uuid::nil(),
            idempotency_key: None,
            order_id: Uuid::nil(),
            amount: 2500,
            method: Method::FakeCardDeclined,
        };
        assert_eq!(
            pay.fingerprint(),
            "00000000-0000-0000-0000-000000000000:2500:fake-card-declined"
        );
    }
}
