-- The verifier's stand-in for pgcrypto 1.3 (see verifier/scratch/standin.py).
CREATE FUNCTION gen_random_uuid() RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE
  AS $$SELECT pg_catalog.gen_random_uuid()$$;
CREATE FUNCTION digest(bytea, text) RETURNS bytea LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
  CASE lower($2)
    WHEN 'md5' THEN RETURN decode(md5($1), 'hex');
    WHEN 'sha1' THEN RETURN @extschema@.pgcrypto_sha1($1);
    WHEN 'sha224' THEN RETURN sha224($1);
    WHEN 'sha256' THEN RETURN sha256($1);
    WHEN 'sha384' THEN RETURN sha384($1);
    WHEN 'sha512' THEN RETURN sha512($1);
    ELSE RAISE EXCEPTION 'Cannot use "%": No such hash algorithm', $2
           USING HINT = 'The verifier''s pgcrypto stand-in knows md5, sha1, sha224, sha256, sha384, sha512.';
  END CASE;
END
$$;
CREATE FUNCTION digest(text, text) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$SELECT @extschema@.digest(convert_to($1, getdatabaseencoding()), $2)$$;
CREATE FUNCTION hmac(bytea, bytea, text) RETURNS bytea LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
  block int := CASE WHEN lower($3) IN ('sha384', 'sha512') THEN 128 ELSE 64 END;
  key bytea := CASE WHEN length($2) > block THEN @extschema@.digest($2, $3) ELSE $2 END;
  inner_pad bytea; outer_pad bytea;
BEGIN
  key := key || decode(repeat('00', block - length(key)), 'hex');
  inner_pad := key; outer_pad := key;
  FOR i IN 0 .. block - 1 LOOP
    inner_pad := set_byte(inner_pad, i, get_byte(key, i) # 54);
    outer_pad := set_byte(outer_pad, i, get_byte(key, i) # 92);
  END LOOP;
  RETURN @extschema@.digest(outer_pad || @extschema@.digest(inner_pad || $1, $3), $3);
END
$$;
CREATE FUNCTION hmac(text, text, text) RETURNS bytea LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
  AS $$SELECT @extschema@.hmac(convert_to($1, getdatabaseencoding()), convert_to($2, getdatabaseencoding()), $3)$$;
CREATE FUNCTION gen_random_bytes(integer) RETURNS bytea LANGUAGE plpgsql VOLATILE STRICT PARALLEL SAFE AS $$
DECLARE out bytea := '';
BEGIN
  IF $1 < 1 OR $1 > 1024 THEN
    RAISE EXCEPTION 'Length not in range';
  END IF;
  WHILE length(out) < $1 LOOP
    out := out || sha256(uuid_send(pg_catalog.gen_random_uuid()) || uuid_send(pg_catalog.gen_random_uuid()));
  END LOOP;
  RETURN substring(out FROM 1 FOR $1);
END
$$;
