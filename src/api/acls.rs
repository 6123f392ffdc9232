//! DescribeAcls, CreateAcls and DeleteAcls without an authorizer: this broker has none
//! (`authorizer.class.name` empty), so every request is answered SECURITY_DISABLED with
//! the messages Kafka 4.0's `AclApis` uses in that case. Admin tools then report
//! "security is disabled" instead of failing to negotiate the API.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::broker::Broker;

/// Kafka's `AclApis.handleDescribeAcls` message when no authorizer is configured.
const DESCRIBE_NO_AUTHORIZER: &str = "No Authorizer is configured on the broker";
/// Kafka's `SecurityDisabledException` message in CreateAcls and DeleteAcls.
const ALTER_NO_AUTHORIZER: &str = "No Authorizer is configured.";

fn security_disabled() -> i16 {
    ResponseError::SecurityDisabled.code()
}

pub async fn describe_acls(
    _broker: &Broker,
    _context: &RequestContext,
    _request: DescribeAclsRequest,
) -> DescribeAclsResponse {
    describe_response()
}

pub async fn create_acls(
    _broker: &Broker,
    _context: &RequestContext,
    request: CreateAclsRequest,
) -> CreateAclsResponse {
    create_response(&request)
}

pub async fn delete_acls(
    _broker: &Broker,
    _context: &RequestContext,
    request: DeleteAclsRequest,
) -> DeleteAclsResponse {
    delete_response(&request)
}

fn describe_response() -> DescribeAclsResponse {
    DescribeAclsResponse::default()
        .with_error_code(security_disabled())
        .with_error_message(Some(StrBytes::from_static_str(DESCRIBE_NO_AUTHORIZER)))
}

/// One failed result per creation, as `CreateAclsRequest.getErrorResponse` builds it.
fn create_response(request: &CreateAclsRequest) -> CreateAclsResponse {
    let failed = AclCreationResult::default()
        .with_error_code(security_disabled())
        .with_error_message(Some(StrBytes::from_static_str(ALTER_NO_AUTHORIZER)));
    CreateAclsResponse::default().with_results(vec![failed; request.creations.len()])
}

/// One failed result per filter, as `DeleteAclsRequest.getErrorResponse` builds it.
fn delete_response(request: &DeleteAclsRequest) -> DeleteAclsResponse {
    let failed = DeleteAclsFilterResult::default()
        .with_error_code(security_disabled())
        .with_error_message(Some(StrBytes::from_static_str(ALTER_NO_AUTHORIZER)));
    DeleteAclsResponse::default().with_filter_results(vec![failed; request.filters.len()])
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;

    use super::*;

    fn message(text: &Option<StrBytes>) -> Option<&str> {
        text.as_ref().map(|m| m.as_str())
    }

    #[test]
    fn describe_is_security_disabled_with_kafkas_message() {
        let response = describe_response();
        assert_eq!(response.error_code, 54);
        let expected = Some("No Authorizer is configured on the broker");
        assert_eq!(message(&response.error_message), expected);
        assert!(response.resources.is_empty());
    }

    #[test]
    fn every_creation_gets_security_disabled() {
        let request = CreateAclsRequest::default().with_creations(vec![AclCreation::default(); 3]);
        let response = create_response(&request);
        assert_eq!(response.results.len(), 3);
        for result in &response.results {
            assert_eq!(result.error_code, 54);
            let expected = Some("No Authorizer is configured.");
            assert_eq!(message(&result.error_message), expected);
        }
        assert!(
            create_response(&CreateAclsRequest::default())
                .results
                .is_empty()
        );
    }

    #[test]
    fn every_delete_filter_gets_security_disabled_and_matches_nothing() {
        let request =
            DeleteAclsRequest::default().with_filters(vec![DeleteAclsFilter::default(); 2]);
        let response = delete_response(&request);
        assert_eq!(response.filter_results.len(), 2);
        for result in &response.filter_results {
            assert_eq!(result.error_code, 54);
            let expected = Some("No Authorizer is configured.");
            assert_eq!(message(&result.error_message), expected);
            assert!(result.matching_acls.is_empty());
        }
    }
}
