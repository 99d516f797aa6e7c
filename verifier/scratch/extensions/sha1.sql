-- SHA-1 (FIPS 180-4, section 6.1) in PL/pgSQL on bigint words: PostgreSQL has no sha1() of its own.
-- Written into each stand-in that needs it, as @sha1@ (its name there).
CREATE FUNCTION @sha1@(data bytea) RETURNS bytea LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $f$
DECLARE
  m32 CONSTANT bigint := 4294967295;
  h bigint[] := ARRAY[1732584193, 4023233417, 2562383102, 271733878, 3285377520]::bigint[];
  msg bytea := data || '\x80'::bytea;
  w bigint[]; a bigint; b bigint; c bigint; d bigint; e bigint; f bigint; k bigint; t bigint;
  base int;
BEGIN
  WHILE length(msg) % 64 <> 56 LOOP msg := msg || '\x00'::bytea; END LOOP;
  msg := msg || int8send(length(data)::bigint * 8);
  FOR chunk IN 0 .. length(msg) / 64 - 1 LOOP
    base := chunk * 64;
    w := array_fill(0::bigint, ARRAY[80]);
    FOR i IN 0 .. 15 LOOP
      w[i + 1] := (get_byte(msg, base + i * 4)::bigint << 24) | (get_byte(msg, base + i * 4 + 1) << 16)
                  | (get_byte(msg, base + i * 4 + 2) << 8) | get_byte(msg, base + i * 4 + 3);
    END LOOP;
    FOR i IN 16 .. 79 LOOP
      t := w[i - 2] # w[i - 7] # w[i - 13] # w[i - 15];
      w[i + 1] := ((t << 1) | (t >> 31)) & m32;
    END LOOP;
    a := h[1]; b := h[2]; c := h[3]; d := h[4]; e := h[5];
    FOR i IN 0 .. 79 LOOP
      IF i < 20 THEN f := (b & c) | ((~b & m32) & d); k := 1518500249;
      ELSIF i < 40 THEN f := b # c # d; k := 1859775393;
      ELSIF i < 60 THEN f := (b & c) | (b & d) | (c & d); k := 2400959708;
      ELSE f := b # c # d; k := 3395469782;
      END IF;
      t := ((((a << 5) | (a >> 27)) & m32) + f + e + k + w[i + 1]) & m32;
      e := d; d := c; c := ((b << 30) | (b >> 2)) & m32; b := a; a := t;
    END LOOP;
    h[1] := (h[1] + a) & m32; h[2] := (h[2] + b) & m32; h[3] := (h[3] + c) & m32;
    h[4] := (h[4] + d) & m32; h[5] := (h[5] + e) & m32;
  END LOOP;
  RETURN substring(int8send(h[1]) FROM 5) || substring(int8send(h[2]) FROM 5)
         || substring(int8send(h[3]) FROM 5) || substring(int8send(h[4]) FROM 5)
         || substring(int8send(h[5]) FROM 5);
END
$f$;
