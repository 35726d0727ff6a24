//! The messages between services: request and response bodies, the paths they travel on,
//! and the statuses they carry, defined once for caller and callee alike. Renaming a
//! field here breaks the build of both sides, not a checkout at run time.
//!
//! Behind the `wire` feature, which only the services enable: these types need `uuid`,
//! `time`, `utoipa` (the services' OpenAPI documents show them) and `sqlx` (statuses are
//! stored as they travel), and the operator, which also depends on this crate, needs none
//! of that. Statuses are stored in TEXT columns with CHECK constraints, so their `sqlx`
//! mapping is a plain string (no Postgres enum type, no migration, no per-connection type
//! lookup).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use uuid::Uuid;

/// A status that crosses a service boundary: serialised, stored and compared as one of a
/// fixed set of upper-case words, in JSON and in TEXT columns alike.
macro_rules! text_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        // Written out: utoipa's derive does not see a `rename` that comes from a macro
        // argument, and documented the variants' Rust names instead of the words on the wire.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word on the wire and in the database.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// The status named `text` exactly (upper case), if there is one.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|s| s.as_str() == text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl sqlx::Decode<'_, sqlx::Postgres> for $name {
            fn decode(
                value: sqlx::postgres::PgValueRef<'_>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                $name::parse(text).ok_or_else(|| {
                    format!(concat!("not a ", stringify!($name), ": {:?}"), text).into()
                })
            }
        }
    };
}

text_enum! {
    /// Where an order stands. PENDING until paid, cancelled or expired; the order
    /// service's `checkout::transition` says which moves are allowed.
    pub enum OrderStatus {
        Pending = "PENDING",
        Paid = "PAID",
        Cancelled = "CANCELLED",
        Expired = "EXPIRED",
    }
}

text_enum! {
    /// Where a stock reservation stands at the product service.
    pub enum ReservationStatus {
        /// Stock is held for the order.
        Reserved = "RESERVED",
        /// The order was paid: the stock is sold.
        Committed = "COMMITTED",
        /// The order was cancelled or expired: the stock is back.
        Released = "RELEASED",
    }
}

text_enum! {
    /// A payment's status, and what its event tells the order. Events carry only
    /// SUCCEEDED or DECLINED; the order service refuses any other outcome (422).
    pub enum PaymentStatus {
        Succeeded = "SUCCEEDED",
        Declined = "DECLINED",
        /// The payment succeeded but the order refused it (cancelled, expired, or its stock
        /// gone): the money went back to the customer.
        Refunded = "REFUNDED",
    }
}

/// The paths of the internal API (service tokens only; the gateway never routes there).
/// The route templates are what the callee mounts; the functions build what a caller sends.
pub mod paths {
    use uuid::Uuid;

    /// Product: reserve stock for a whole order (`POST`, [`super::ReserveRequest`]).
    pub const RESERVATIONS: &str = "/internal/reservations";
    /// Product: one order's reservation (`GET`).
    pub const RESERVATION: &str = "/internal/reservations/{order_id}";
    /// Product: the order was paid (`POST`).
    pub const RESERVATION_COMMIT: &str = "/internal/reservations/{order_id}/commit";
    /// Product: the order was cancelled or expired (`POST`).
    pub const RESERVATION_RELEASE: &str = "/internal/reservations/{order_id}/release";
    /// Order: one order, as payment reads it (`GET`, [`super::Order`]).
    pub const ORDER: &str = "/internal/orders/{id}";
    /// Order: a payment's outcome (`POST`, [`super::PaymentEvent`]).
    pub const PAYMENT_EVENTS: &str = "/internal/orders/{id}/payment-events";

    pub fn reservation_commit(order_id: Uuid) -> String {
        RESERVATION_COMMIT.replace("{order_id}", &order_id.to_string())
    }

    pub fn reservation_release(order_id: Uuid) -> String {
        RESERVATION_RELEASE.replace("{order_id}", &order_id.to_string())
    }

    pub fn order(id: Uuid) -> String {
        ORDER.replace("{id}", &id.to_string())
    }

    pub fn payment_events(order_id: Uuid) -> String {
        PAYMENT_EVENTS.replace("{id}", &order_id.to_string())
    }
}

/// One line of an order: what the client asks the order service for, and what the order
/// service asks the product service to reserve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineItem {
    pub product_id: Uuid,
    /// 1 to 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub quantity: i64,
}

/// Order → product: hold stock for every line of this order, or for none.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveRequest {
    pub order_id: Uuid,
    pub items: Vec<LineItem>,
}

/// One line priced by the catalog when its stock was reserved: what a reservation holds,
/// and what the order placed with it keeps.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct PricedItem {
    pub product_id: Uuid,
    pub name: String,
    pub quantity: i32,
    /// Minor units, taken from the catalog at reservation time.
    pub unit_price: i64,
    pub currency: String,
}

/// Product → order: the stock held for an order, and its price.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Reservation {
    pub order_id: Uuid,
    pub status: ReservationStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub items: Vec<PricedItem>,
    pub total: i64,
    pub currency: String,
}

/// An order: what its owner reads at `/orders/{id}`, and what the payment service reads
/// at [`paths::ORDER`] before taking a payment for it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Order {
    pub id: Uuid,
    pub user_id: Uuid,
    pub status: OrderStatus,
    pub items: Vec<PricedItem>,
    /// Minor units.
    pub total: i64,
    pub currency: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub paid_at: Option<OffsetDateTime>,
}

/// Payment → order, through the payment service's outbox: a payment's outcome.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentEvent {
    /// Unique per event; a redelivery carries the same id.
    pub event_id: Uuid,
    pub payment_id: Uuid,
    pub outcome: PaymentStatus,
    pub amount: i64,
}

/// Order → payment: what a payment event did.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct EventResult {
    /// Whether this delivery's payment was applied to the order (false for a redelivery,
    /// a decline, or a success the order refused).
    pub applied: bool,
    pub status: OrderStatus,
}

impl EventResult {
    /// Whether a payment with `outcome` must be refunded after this answer: a success the
    /// order did not end up PAID by (it was cancelled or expired first) keeps no money.
    pub fn refuses(&self, outcome: PaymentStatus) -> bool {
        outcome == PaymentStatus::Succeeded && self.status != OrderStatus::Paid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_travel_as_their_upper_case_words() {
        for s in OrderStatus::ALL {
            let json = serde_json::to_value(s).unwrap_or_default();
            assert_eq!(json, s.as_str());
            assert_eq!(OrderStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(
            serde_json::to_value(ReservationStatus::Committed).unwrap_or_default(),
            "COMMITTED"
        );
        assert_eq!(
            serde_json::from_str::<PaymentStatus>("\"DECLINED\"").ok(),
            Some(PaymentStatus::Declined)
        );
        assert_eq!(OrderStatus::parse("pending"), None);
    }

    #[test]
    fn the_openapi_schema_of_each_status_lists_its_wire_words() {
        fn words<T: utoipa::PartialSchema>() -> serde_json::Value {
            serde_json::to_value(T::schema()).unwrap_or_default()["enum"].clone()
        }
        let expected = |all: Vec<&str>| serde_json::json!(all);
        assert_eq!(
            words::<OrderStatus>(),
            expected(OrderStatus::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(
            words::<ReservationStatus>(),
            expected(ReservationStatus::ALL.iter().map(|s| s.as_str()).collect())
        );
        assert_eq!(
            words::<PaymentStatus>(),
            expected(PaymentStatus::ALL.iter().map(|s| s.as_str()).collect())
        );
    }

    #[test]
    fn paths_fill_in_the_id_of_their_templates() {
        let id = Uuid::nil();
        let nil = "00000000-0000-0000-0000-000000000000";
        assert_eq!(
            paths::reservation_commit(id),
            format!("/internal/reservations/{nil}/commit")
        );
        assert_eq!(
            paths::reservation_release(id),
            format!("/internal/reservations/{nil}/release")
        );
        assert_eq!(paths::order(id), format!("/internal/orders/{nil}"));
        assert_eq!(
            paths::payment_events(id),
            format!("/internal/orders/{nil}/payment-events")
        );
    }

    #[test]
    fn only_a_success_the_order_did_not_take_is_refused() {
        let answer = |status| EventResult {
            applied: false,
            status,
        };
        assert!(!answer(OrderStatus::Paid).refuses(PaymentStatus::Succeeded));
        assert!(answer(OrderStatus::Cancelled).refuses(PaymentStatus::Succeeded));
        assert!(answer(OrderStatus::Expired).refuses(PaymentStatus::Succeeded));
        assert!(!answer(OrderStatus::Pending).refuses(PaymentStatus::Declined));
    }

    #[test]
    fn a_payment_event_with_an_unknown_field_is_refused() {
        let event = serde_json::json!({
            "event_id": Uuid::nil(), "payment_id": Uuid::nil(),
            "outcome": "SUCCEEDED", "amount": 5, "extra": 1
        });
        assert!(serde_json::from_value::<PaymentEvent>(event).is_err());
    }
}
