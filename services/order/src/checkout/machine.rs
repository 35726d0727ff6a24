//! The order state machine: which event moves an order from which status to which. Pure,
//! so every pair is tested; the checkout does the side effects a move implies (commit
//! or release the stock) and the repository writes it.

use mercato_contract::wire::OrderStatus;

/// What can happen to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The payment service reports a successful payment.
    PaymentSucceeded,
    /// The payment service reports a declined payment.
    PaymentDeclined,
    /// The owner (or an admin) cancels it.
    Cancel,
    /// Its time to be paid ran out.
    Expire,
}

impl Event {
    pub const ALL: [Event; 4] = [
        Event::PaymentSucceeded,
        Event::PaymentDeclined,
        Event::Cancel,
        Event::Expire,
    ];
}

/// What an event does to an order in a given status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The order moves to this status.
    To(OrderStatus),
    /// Nothing changes and nothing is wrong: the event repeats what already happened, or
    /// by design leaves the order as it is (a declined payment; the client may pay again).
    Stays,
    /// The event does not fit the order's status; nothing changes and the caller says so
    /// (a cancel of a paid order is refused; a payment for a cancelled one needs a refund).
    Refused,
}

/// The statuses whose reserved stock goes back to the product service.
pub const RETURNS_STOCK: [OrderStatus; 2] = [OrderStatus::Cancelled, OrderStatus::Expired];

/// Only a PENDING order moves: paid, cancelled or expired. A success for an order already
/// PAID is a redelivery; a decline never changes anything.
pub const fn transition(status: OrderStatus, event: Event) -> Transition {
    use OrderStatus::{Cancelled, Expired, Paid, Pending};
    match (status, event) {
        (Pending, Event::PaymentSucceeded) => Transition::To(Paid),
        (Paid, Event::PaymentSucceeded) => Transition::Stays,
        (Cancelled | Expired, Event::PaymentSucceeded) => Transition::Refused,
        (_, Event::PaymentDeclined) => Transition::Stays,
        (Pending, Event::Cancel) => Transition::To(Cancelled),
        (Paid | Cancelled | Expired, Event::Cancel) => Transition::Refused,
        (Pending, Event::Expire) => Transition::To(Expired),
        (Paid | Cancelled | Expired, Event::Expire) => Transition::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::{Cancelled, Expired, Paid, Pending};
    use Transition::{Refused, Stays, To};

    /// Every status × every event, written out: the table the code must match.
    const TABLE: [(OrderStatus, Event, Transition); 16] = [
        (Pending, Event::PaymentSucceeded, To(Paid)),
        (Pending, Event::PaymentDeclined, Stays),
        (Pending, Event::Cancel, To(Cancelled)),
        (Pending, Event::Expire, To(Expired)),
        (Paid, Event::PaymentSucceeded, Stays),
        (Paid, Event::PaymentDeclined, Stays),
        (Paid, Event::Cancel, Refused),
        (Paid, Event::Expire, Refused),
        (Cancelled, Event::PaymentSucceeded, Refused),
        (Cancelled, Event::PaymentDeclined, Stays),
        (Cancelled, Event::Cancel, Refused),
        (Cancelled, Event::Expire, Refused),
        (Expired, Event::PaymentSucceeded, Refused),
        (Expired, Event::PaymentDeclined, Stays),
        (Expired, Event::Cancel, Refused),
        (Expired, Event::Expire, Refused),
    ];

    #[test]
    fn every_status_and_event_moves_as_the_table_says() {
        for (status, event, expected) in TABLE {
            assert_eq!(transition(status, event), expected, "{status} on {event:?}");
        }
    }

    #[test]
    fn the_table_covers_every_status_and_event_once() {
        for status in OrderStatus::ALL {
            for event in Event::ALL {
                let rows = TABLE
                    .iter()
                    .filter(|(s, e, _)| s == status && *e == event)
                    .count();
                assert_eq!(rows, 1, "{status} on {event:?}");
            }
        }
    }

    #[test]
    fn only_a_pending_order_ever_moves() {
        for status in OrderStatus::ALL {
            for event in Event::ALL {
                if let To(_) = transition(*status, event) {
                    assert_eq!(*status, Pending, "{status} moved on {event:?}");
                }
            }
        }
    }

    #[test]
    fn the_orders_that_return_stock_are_the_ones_cancel_and_expire_lead_to() {
        assert_eq!(
            RETURNS_STOCK.map(Some),
            [Event::Cancel, Event::Expire].map(|e| match transition(Pending, e) {
                To(s) => Some(s),
                _ => None,
            })
        );
    }
}
