//! DescribeTransactions v0 and ListTransactions v0-1: what the transaction coordinators
//! of this broker hold (kafka-transactions.sh, Admin.describeTransactions).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::list_transactions_response::TransactionState as ListedState;
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use super::errors::txn_error;
use crate::broker::Broker;
use crate::txn::records::TxnStatus;
use crate::types::now_ms;

pub async fn describe(
    broker: &Broker,
    _context: &RequestContext,
    request: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let states = request
        .transactional_ids
        .iter()
        .map(|id| {
            let base = TransactionState::default()
                .with_transactional_id(id.clone())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_transaction_start_time_ms(-1);
            match broker.transactions.describe(id.0.as_str()) {
                Ok(meta) if meta.state != TxnStatus::Dead => base
                    .with_transaction_state(StrBytes::from_static_str(meta.state.name()))
                    .with_transaction_timeout_ms(meta.timeout_ms)
                    .with_transaction_start_time_ms(meta.start_ms)
                    .with_producer_id(ProducerId(meta.producer_id))
                    .with_producer_epoch(meta.producer_epoch)
                    .with_topics(
                        meta.partitions
                            .iter()
                            .map(|(topic, ids)| {
                                TopicData::default()
                                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                                    .with_partitions(ids.iter().copied().collect())
                            })
                            .collect(),
                    ),
                Ok(_) => base.with_error_code(ResponseError::TransactionalIdNotFound.code()),
                Err(error) => base.with_error_code(txn_error(&error, false).code()),
            }
        })
        .collect();
    DescribeTransactionsResponse::default().with_transaction_states(states)
}

pub async fn list(
    broker: &Broker,
    context: &RequestContext,
    request: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let mut unknown = Vec::new();
    let mut states = Vec::new();
    for name in &request.state_filters {
        match TxnStatus::from_name(name.as_str()) {
            Some(state) => states.push(state),
            None => unknown.push(name.clone()),
        }
    }
    let response = ListTransactionsResponse::default().with_unknown_state_filters(unknown);
    if states.is_empty() && !request.state_filters.is_empty() {
        // Only unknown states asked for: nothing can match.
        return response;
    }
    let producer_ids: Vec<i64> = request.producer_id_filters.iter().map(|p| p.0).collect();
    let duration_ms = if context.version >= 1 {
        request.duration_filter
    } else {
        -1
    };
    let (listed, loading) = broker
        .transactions
        .list(&states, &producer_ids, duration_ms, now_ms());
    let listed = listed
        .into_iter()
        .map(|txn| {
            ListedState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(txn.transactional_id)))
                .with_producer_id(ProducerId(txn.metadata.producer_id))
                .with_transaction_state(StrBytes::from_static_str(txn.metadata.state.name()))
        })
        .collect();
    let code = if loading {
        ResponseError::CoordinatorLoadInProgress.code()
    } else {
        0
    };
    response
        .with_error_code(code)
        .with_transaction_states(listed)
}
