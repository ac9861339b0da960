#!/usr/bin/env bash
# A stand-in for Claude Code, speaking just enough stream-json for sessiond's
# integration test (the real CLI is exercised by the end-to-end tests).
#
# Per user line it prints (once) a system/init event, then an assistant and a
# result event. Special texts:
#   WAIT_FOR_INTERRUPT  starts a turn that only ends with a control_request
#                       interrupt (answered with control_response + result)
#   EXIT_NOW            exits with status 3
#   SLOW                takes a second to answer (lets turns queue up)
#   ASK_PERMISSION      asks (can_use_tool) whether Bash may run; the turn
#                       ends when the answer (a control_response) arrives,
#                       with a result saying what it was
# The init event reports the arguments and parts of the environment so the
# test can check what sessiond handed over.
sid="fake-$$"
for a in "$@"; do
  case "$a" in --resume=*) sid="${a#--resume=}" ;; esac
done
echo "fake claude starting" >&2
inited=0
waiting=0
n=0
while IFS= read -r line; do
  if [ "$inited" = 0 ]; then
    printf '{"type":"system","subtype":"init","session_id":"%s","cwd":"%s","args":"%s","home":"%s","lang":"%s","term":"%s","token":"%s","extra":"%s"}\n' \
      "$sid" "$PWD" "$*" "${HOME:-}" "${LANG:-}" "${TERM:-}" "${SESSIOND_TOKEN:-}" "${FAKE_EXTRA:-}"
    inited=1
  fi
  case "$line" in
    *'"request_id":"perm-'*)
      case "$line" in
        *'"behavior":"allow"'*) verdict="allow" ;;
        *) msg="${line#*\"message\":\"}"; verdict="deny: ${msg%%\"*}" ;;
      esac
      printf '{"type":"result","subtype":"success","result":"permission %s","session_id":"%s"}\n' "$verdict" "$sid"
      ;;
    *'"type":"control_request"'*)
      id="${line#*\"request_id\":\"}"
      id="${id%%\"*}"
      printf '{"type":"control_response","response":{"subtype":"success","request_id":"%s"}}\n' "$id"
      if [ "$waiting" = 1 ]; then
        waiting=0
        printf '{"type":"result","subtype":"error_during_execution","terminal_reason":"aborted_streaming","session_id":"%s"}\n' "$sid"
      fi
      ;;
    *'"type":"user"'*)
      n=$((n + 1))
      case "$line" in
        *EXIT_NOW*) exit 3 ;;
        *WAIT_FOR_INTERRUPT*)
          waiting=1
          printf '{"type":"assistant","message":{"content":[{"type":"text","text":"thinking"}]},"session_id":"%s"}\n' "$sid"
          continue
          ;;
        *SLOW*) sleep 1 ;;
        *ASK_PERMISSION*)
          printf '{"type":"control_request","request_id":"perm-%d","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"echo %d"},"tool_use_id":"toolu_%d"}}\n' "$n" "$n" "$n"
          continue
          ;;
      esac
      echo "this line is not json"
      printf '{"type":"assistant","message":{"content":[{"type":"text","text":"reply %d"}]},"session_id":"%s"}\n' "$n" "$sid"
      printf '{"type":"result","subtype":"success","result":"reply %d","session_id":"%s"}\n' "$n" "$sid"
      ;;
  esac
done
echo "fake claude: stdin closed" >&2
