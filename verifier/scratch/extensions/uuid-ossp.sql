-- The verifier's stand-in for uuid-ossp 1.1 (see verifier/scratch/standin.py).
CREATE FUNCTION uuid_nil() RETURNS uuid LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$SELECT '00000000-0000-0000-0000-000000000000'::uuid$$;
CREATE FUNCTION uuid_ns_dns() RETURNS uuid LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$SELECT '6ba7b810-9dad-11d1-80b4-00c04fd430c8'::uuid$$;
CREATE FUNCTION uuid_ns_url() RETURNS uuid LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$SELECT '6ba7b811-9dad-11d1-80b4-00c04fd430c8'::uuid$$;
CREATE FUNCTION uuid_ns_oid() RETURNS uuid LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$SELECT '6ba7b812-9dad-11d1-80b4-00c04fd430c8'::uuid$$;
CREATE FUNCTION uuid_ns_x500() RETURNS uuid LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$SELECT '6ba7b814-9dad-11d1-80b4-00c04fd430c8'::uuid$$;
CREATE FUNCTION uuid_generate_v4() RETURNS uuid LANGUAGE sql VOLATILE STRICT PARALLEL SAFE
  AS $$SELECT pg_catalog.gen_random_uuid()$$;
CREATE FUNCTION uuid_ossp_versioned(hash bytea, version int) RETURNS uuid LANGUAGE sql IMMUTABLE STRICT
  PARALLEL SAFE AS $$
  SELECT encode(set_byte(set_byte(substring(hash FROM 1 FOR 16), 6, (get_byte(hash, 6) & 15) | (version << 4)),
                         8, (get_byte(hash, 8) & 63) | 128), 'hex')::uuid
$$;
CREATE FUNCTION uuid_generate_v3(namespace uuid, name text) RETURNS uuid LANGUAGE sql IMMUTABLE STRICT
  PARALLEL SAFE AS $$
  SELECT @extschema@.uuid_ossp_versioned(decode(md5(uuid_send(namespace) || convert_to(name, getdatabaseencoding())),
                                    'hex'), 3)
$$;
CREATE FUNCTION uuid_generate_v5(namespace uuid, name text) RETURNS uuid LANGUAGE sql IMMUTABLE STRICT
  PARALLEL SAFE AS $$
  SELECT @extschema@.uuid_ossp_versioned(@extschema@.uuid_ossp_sha1(uuid_send(namespace) || convert_to(name, getdatabaseencoding())), 5)
$$;
CREATE FUNCTION uuid_ossp_time_based(multicast_node bigint) RETURNS uuid LANGUAGE sql VOLATILE STRICT AS $$
  SELECT (lpad(to_hex(t & 4294967295), 8, '0') || lpad(to_hex((t >> 32) & 65535), 4, '0')
          || lpad(to_hex(((t >> 48) & 4095) | 4096), 4, '0') || lpad(to_hex((r & 16383) | 32768), 4, '0')
          || lpad(to_hex(multicast_node | 1099511627776), 12, '0'))::uuid
  FROM (SELECT (extract(epoch FROM clock_timestamp()) * 10000000)::bigint + 122192928000000000 AS t,
               floor(random() * 16384)::bigint AS r) s
$$;
CREATE FUNCTION uuid_generate_v1mc() RETURNS uuid LANGUAGE sql VOLATILE STRICT AS $$
  SELECT @extschema@.uuid_ossp_time_based(floor(random() * 281474976710656)::bigint)
$$;
-- No MAC address is read: v1 is v1mc (a random multicast node; RFC 4122, section 4.5).
CREATE FUNCTION uuid_generate_v1() RETURNS uuid LANGUAGE sql VOLATILE STRICT AS $$
  SELECT @extschema@.uuid_generate_v1mc()
$$;
