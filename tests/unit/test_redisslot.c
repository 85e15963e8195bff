/* Check suite for host/svc/redis_slot.c: CRC16/XMODEM and the hash slots
 * of the Redis Cluster specification, hash tags, and the keys of the
 * commands the gateway sends. */
#include "check_main.h"

#include "svc/redis_slot.h"

#define S(x) ((mf_str_t){x, sizeof(x) - 1})

START_TEST(crc16_and_slots)
{
    /* the check value of CRC16/XMODEM and the spec's examples */
    ck_assert_uint_eq(mf_redis_crc16("123456789", 9), 0x31C3);
    ck_assert_int_eq(mf_redis_key_slot(S("123456789")), 0x31C3 % 16384);
    ck_assert_int_eq(mf_redis_key_slot(S("foo")), 12182);
    ck_assert_int_eq(mf_redis_key_slot(S("bar")), 5061);
    ck_assert_int_eq(mf_redis_key_slot(S("hello")), 866);
    ck_assert_int_eq(mf_redis_key_slot(S("")), 0);
    /* a hash tag: the text inside the first {...} */
    ck_assert_int_eq(mf_redis_key_slot(S("{user1000}.following")),
                     mf_redis_key_slot(S("{user1000}.followers")));
    ck_assert_int_eq(mf_redis_key_slot(S("{user1000}.following")),
                     mf_redis_key_slot(S("user1000")));
    ck_assert_int_eq(mf_redis_key_slot(S("foo{bar}{zap}")),
                     mf_redis_key_slot(S("bar")));
    /* an empty tag, or none closed: the whole key */
    ck_assert_int_eq(mf_redis_key_slot(S("foo{}{bar}")),
                     mf_redis_crc16("foo{}{bar}", 10) % 16384);
    ck_assert_int_eq(mf_redis_key_slot(S("foo{bar")),
                     mf_redis_crc16("foo{bar", 7) % 16384);
    ck_assert_int_eq(mf_redis_key_slot(S("{{bar}}zap")),
                     mf_redis_key_slot(S("{bar")));
}
END_TEST

START_TEST(command_keys)
{
    int slot, split;
    mf_str_t get[] = {S("GET"), S("foo")};
    mf_str_t eval[] = {
        S("EVAL"),         S("return 1"),     S("2"),
        S("mf:lim:{t}:a"), S("mf:lim:{t}:b"), S("arg-not-a-key")};
    mf_str_t eval0[] = {S("EVALSHA"), S("abc"), S("0"), S("x")};
    mf_str_t evalx[] = {S("EVAL"), S("s"), S("2"), S("foo"), S("bar")};
    mf_str_t xread[] = {S("XREAD"),   S("COUNT"), S("10"),
                        S("STREAMS"), S("foo"),   S("0-0")};
    mf_str_t mget[] = {S("mget"), S("foo"), S("bar")};
    mf_str_t mget1[] = {S("MGET"), S("{t}a"), S("{t}b")};
    mf_str_t mset[] = {S("MSET"), S("{t}a"), S("foo"), S("{t}b"), S("bar")};
    mf_str_t del[] = {S("DEL"), S("foo"), S("bar")};
    mf_str_t load[] = {S("SCRIPT"), S("LOAD"), S("return 1")};
    mf_str_t exists[] = {S("SCRIPT"), S("EXISTS"), S("abc")};
    mf_str_t ping[] = {S("PING")};
    mf_str_t multi[] = {S("MULTI")};
    mf_str_t set[] = {S("SET"), S("foo"), S("bar"), S("NX")};

    ck_assert_int_eq(mf_redis_cmd_route(2, get, &slot, &split), MF_RCMD_KEYED);
    ck_assert_int_eq(slot, 12182);
    ck_assert_int_eq(mf_redis_cmd_route(4, set, &slot, &split), MF_RCMD_KEYED);
    ck_assert_int_eq(slot, 12182); /* only argv[1] is a key */
    ck_assert_int_eq(mf_redis_cmd_route(6, eval, &slot, &split), MF_RCMD_KEYED);
    ck_assert_int_eq(slot, mf_redis_key_slot(S("t")));
    ck_assert_int_eq(mf_redis_cmd_route(4, eval0, &slot, &split),
                     MF_RCMD_KEYLESS);
    ck_assert_int_eq(mf_redis_cmd_route(5, evalx, &slot, &split),
                     MF_RCMD_CROSSSLOT);
    ck_assert_int_eq(split, 0);
    ck_assert_int_eq(mf_redis_cmd_route(6, xread, &slot, &split),
                     MF_RCMD_KEYED);
    ck_assert_int_eq(slot, 12182);
    ck_assert_int_eq(mf_redis_cmd_route(3, mget, &slot, &split),
                     MF_RCMD_CROSSSLOT);
    ck_assert_int_eq(split, 1); /* MGET may be sent per key */
    ck_assert_int_eq(mf_redis_cmd_route(3, mget1, &slot, &split),
                     MF_RCMD_KEYED);
    ck_assert_int_eq(mf_redis_cmd_route(5, mset, &slot, &split), MF_RCMD_KEYED);
    ck_assert_int_eq(mf_redis_cmd_route(3, del, &slot, &split),
                     MF_RCMD_CROSSSLOT);
    ck_assert_int_eq(split, 0);
    ck_assert_int_eq(mf_redis_cmd_route(3, load, &slot, &split), MF_RCMD_ALL);
    ck_assert_int_eq(mf_redis_cmd_route(3, exists, &slot, &split),
                     MF_RCMD_KEYLESS);
    ck_assert_int_eq(mf_redis_cmd_route(1, ping, &slot, &split),
                     MF_RCMD_KEYLESS);
    ck_assert_int_eq(mf_redis_cmd_route(1, multi, &slot, &split),
                     MF_RCMD_REFUSED);
}
END_TEST

int
main(void)
{
    Suite *s = suite_create("redisslot");
    TCase *tc = tcase_create("slots");

    tcase_add_test(tc, crc16_and_slots);
    tcase_add_test(tc, command_keys);
    suite_add_tcase(s, tc);
    return mf_check_run(s, 0);
}
