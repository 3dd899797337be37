# attack: `user` becomes root through the image's setuid binaries (su, with no password)
# users: user
# shell
# expect-microvm: blocked
out=$(su -c 'id -u' root </dev/null 2>&1); code=$?
id_u=$(printf '%s' "$out" | tail -n1)
if [ "$code" -eq 0 ] && [ "$id_u" = "0" ]; then outcome=succeeded; else outcome=blocked; fi
detail=$(printf '%s' "exit $code: $out" | tr -d '"\\\n' | cut -c1-200)
printf '{"attack": "su_to_root", "outcome": "%s", "detail": "%s"}\n' "$outcome" "$detail"
