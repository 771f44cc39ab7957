"""One place names the broker's Redis for redis-py and for the `limits` library (sign-in throttling,
quotas and the serving limits all count there): TCP URLs pass through, kombu's unix socket becomes
each library's own spelling."""

from app.queue import limits_storage_uri, redis_url


def test_tcp_and_unix_socket_brokers_are_named_for_redis_py_and_limits():
    assert redis_url("redis://127.0.0.1:6379/15") == "redis://127.0.0.1:6379/15"
    assert limits_storage_uri("redis://127.0.0.1:6379/15") == "redis://127.0.0.1:6379/15"
    assert limits_storage_uri("redis://127.0.0.1:6379/15", asynchronous=True) == "async+redis://127.0.0.1:6379/15"
    assert redis_url("redis+socket:///var/broker/redis.sock") == "unix:///var/broker/redis.sock"
    assert limits_storage_uri("redis+socket:///var/broker/redis.sock") == "redis+unix:///var/broker/redis.sock"
    assert limits_storage_uri("redis+socket:///var/broker/redis.sock", asynchronous=True) == "async+redis+unix:///var/broker/redis.sock"
