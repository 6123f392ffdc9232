"""ACL APIs without an authorizer (issue 11): DescribeAcls, CreateAcls and DeleteAcls are
advertised at Kafka 4.0's ranges (1-3) and answered SECURITY_DISABLED (54) with Kafka's
messages, as a Kafka broker with an empty `authorizer.class.name` answers them. Real admin
clients must see that error, not a failed negotiation or a dropped connection (librdkafka's
describe_acls drops the error code whatever the broker: there the wire answer is checked).
"""

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation,
                                   AclPermissionType, ResourcePatternType, ResourceType)
from kafka.admin import (ACL, ACLFilter, ACLOperation, ACLPermissionType,
                         ACLResourcePatternType, ResourcePattern, ResourcePatternFilter)
from kafka.admin import ResourceType as KpResourceType
from kafka.errors import SecurityDisabledError

import clients
import conftest
import rawkafka

DESCRIBE_ACLS = 29
SECURITY_DISABLED = 54
DESCRIBE_MESSAGE = "No Authorizer is configured on the broker"
ALTER_MESSAGE = "No Authorizer is configured."


def ck_binding(topic):
    return AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL,
                      "User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW)


def ck_filter():
    return AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY,
                            None, None, AclOperation.ANY, AclPermissionType.ANY)


def assert_security_disabled(future, message):
    with pytest.raises(KafkaException) as raised:
        future.result(timeout=30)
    error = raised.value.args[0]
    assert error.code() == KafkaError.SECURITY_DISABLED == SECURITY_DISABLED
    assert message in error.str(), error.str()


def describe_acls_v1(conn):
    """DescribeAcls v1 matching everything: (error_code, error_message, resources)."""
    any_type, any_pattern, any_operation, any_permission = 1, 1, 1, 1
    body = (rawkafka.int8(any_type) + rawkafka.string(None) + rawkafka.int8(any_pattern)
            + rawkafka.string(None) + rawkafka.string(None)
            + rawkafka.int8(any_operation) + rawkafka.int8(any_permission))
    reader = conn.request(DESCRIBE_ACLS, 1, body)
    reader.int32()  # throttle_time_ms
    answer = (reader.int16(), reader.string(), reader.array(lambda r: r))
    reader.expect_end()
    return answer


def test_describe_acls_answers_security_disabled_on_the_wire(broker):
    with rawkafka.Connection(conftest.HOST, broker.port) as conn:
        assert describe_acls_v1(conn) == (SECURITY_DISABLED, DESCRIBE_MESSAGE, [])


def test_confluent_describe_acls_gets_an_empty_listing(broker):
    # librdkafka (2.12) reads DescribeAcls' error code and drops it: against Kafka too, a
    # broker without an authorizer gives an empty listing, not an error. The wire answer
    # is checked above; here the client must at least not fail or hang.
    admin = clients.admin(broker)
    assert admin.describe_acls(ck_filter()).result(timeout=30) == []


def test_confluent_create_and_delete_acls_see_security_disabled(broker):
    admin = clients.admin(broker)
    bindings = [ck_binding("acl-a"), ck_binding("acl-b")]
    created = admin.create_acls(bindings)
    assert set(created) == set(bindings)
    for future in created.values():
        assert_security_disabled(future, ALTER_MESSAGE)
    deleted = admin.delete_acls([ck_filter()])
    assert len(deleted) == 1
    for future in deleted.values():
        assert_security_disabled(future, ALTER_MESSAGE)


def kp_acl(topic):
    return ACL(principal="User:bob", host="*", operation=ACLOperation.WRITE,
               permission_type=ACLPermissionType.ALLOW,
               resource_pattern=ResourcePattern(KpResourceType.TOPIC, topic,
                                                ACLResourcePatternType.LITERAL))


def kp_filter():
    return ACLFilter(principal=None, host="*", operation=ACLOperation.ANY,
                     permission_type=ACLPermissionType.ANY,
                     resource_pattern=ResourcePatternFilter(KpResourceType.ANY, None,
                                                            ACLResourcePatternType.ANY))


def test_kafka_python_describe_acls_raises_security_disabled(broker):
    admin = clients.kp_admin(broker)
    try:
        with pytest.raises(SecurityDisabledError) as raised:
            admin.describe_acls(kp_filter())
        assert DESCRIBE_MESSAGE in str(raised.value)
    finally:
        admin.close()


def test_kafka_python_create_and_delete_acls_fail_with_security_disabled(broker):
    admin = clients.kp_admin(broker)
    try:
        acls = [kp_acl("kp-acl-a"), kp_acl("kp-acl-b")]
        result = admin.create_acls(acls)
        assert result["succeeded"] == []
        assert [acl for acl, _ in result["failed"]] == acls
        for _, error in result["failed"]:
            assert error is SecurityDisabledError, error
        deleted = admin.delete_acls([kp_filter()])
        assert len(deleted) == 1
        _, matched, error = deleted[0]
        assert matched == []
        assert error is SecurityDisabledError, error
    finally:
        admin.close()
