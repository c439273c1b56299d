#!/usr/bin/env bash
# Reads streamgate's log (its stderr) on stdin and passes it on to stderr; once the startup line
# names the address of every listener, prints them and how to publish and play through each,
# with the ports streamgate bound (whatever flags, variables or .env chose them, port 0
# included). scripts/run.sh runs streamgate with its stderr through this.
set -u
# Ctrl-C is streamgate's to handle: keep passing its log on while it drains, until it exits.
trap '' INT

# The address the startup line gives listener $1 (`...; RTMP 0.0.0.0:11935; ...`), in text
# and JSON log lines alike.
addr_of() {
  local rest=${2#*"; $1 "}
  [ "$rest" != "$2" ] || return 1
  printf '%s' "${rest%%;*}"
}

# An address a client on this host can use for listener address $1: loopback for the
# any-address.
local_addr() {
  case "$1" in
    0.0.0.0:*) printf '127.0.0.1:%s' "${1##*:}" ;;
    "[::]":*) printf '[::1]:%s' "${1##*:}" ;;
    *) printf '%s' "$1" ;;
  esac
}

# How to play over the TLS listeners the startup line names (none unless --rtmps-server,
# --https-server or --https-api is given).
tls_help() {
  local line=$1 addr
  addr=$(addr_of RTMPS "$line") || addr=
  if [ -n "$addr" ]; then
    printf '  ffplay rtmps://%s/live/demo                               # RTMPS\n' "$(local_addr "$addr")"
  fi
  addr=$(addr_of "HTTPS stream" "$line") || addr=
  if [ -n "$addr" ]; then
    printf '  ffplay https://%s/live/demo.flv                           # HTTPS-FLV\n' "$(local_addr "$addr")"
  fi
  addr=$(addr_of "HTTPS API" "$line") || addr=
  if [ -n "$addr" ]; then
    printf '  WHIP/WHEP over HTTPS: https://%s/rtc/v1/whep/?app=live&stream=demo\n' "$(local_addr "$addr")"
  fi
}

announce() {
  local line=$1 name rtmp http srt api tls
  printf '\nstreamgate is listening:\n'
  for name in "RTMP" "HTTP stream" "HTTP API" "WebRTC" "SRT" "System API" "gRPC"; do
    printf '  %-12s %s\n' "$name" "$(addr_of "$name" "$line" || echo '?')"
  done
  # The TLS listeners are in the startup line only when they are on.
  for name in "RTMPS" "HTTPS stream" "HTTPS API"; do
    if addr_of "$name" "$line" >/dev/null; then
      printf '  %-12s %s\n' "$name" "$(addr_of "$name" "$line")"
    fi
  done
  printf '  (HTTP stream: HTTP-FLV, HTTP-TS, HTTP-MP3/AAC, HLS; HTTP API: WebRTC WHIP/WHEP;\n'
  printf '   WebRTC and SRT are UDP; System API: registration and status; gRPC: ModuleService)\n'
  rtmp=$(local_addr "$(addr_of RTMP "$line")")
  http=$(local_addr "$(addr_of "HTTP stream" "$line")")
  srt=$(local_addr "$(addr_of SRT "$line")")
  api=$(local_addr "$(addr_of "System API" "$line")")
  tls=$(tls_help "$line")
  if [ -n "$tls" ]; then
    tls=$(printf '\n\nOver TLS (RTMPS, HTTPS stream, HTTPS API), the same streams:\n\n%s' "$tls")
  fi
  cat <<HELP

Publish and play with no other server: while no origin is registered, streamgate serves a
published stream itself (--local-origin auto, the default; see "Local origin" in the README):

  ffmpeg -re -f lavfi -i testsrc=size=1280x720:rate=25 -f lavfi -i sine -c:v libx264 -g 50 -c:a aac -f flv rtmp://$rtmp/live/demo
  ffplay rtmp://$rtmp/live/demo                                # RTMP
  ffplay http://$http/live/demo.flv                            # HTTP-FLV
  ffplay http://$http/live/demo.ts                             # HTTP-TS
  ffplay http://$http/live/demo.m3u8                           # HLS (remuxed; after its first segments)
  ffplay 'srt://$srt?streamid=#!::r=live/demo,m=request'       # SRT
  ffplay http://$http/streams/demo/master.m3u8                 # the ladder (needs --transcode on)

or publish over SRT instead (served through libavformat: the cargo feature transcode, on by
default):

  ffmpeg -re -f lavfi -i testsrc=size=1280x720:rate=25 -f lavfi -i sine -c:v libx264 -g 50 -c:a aac -f mpegts 'srt://$srt?streamid=#!::r=live/demo,m=publish'$tls

With origins behind it (SRS, nginx-rtmp), streamgate pins each new stream to one of them and
relays it. Register an origin (an SRS heartbeat does this by itself; see README), for example
an SRS listening on 127.0.0.1 for RTMP on 1935, HTTP on 8080 and SRT on 10080 (leave out what
an origin does not serve: nginx-rtmp has RTMP only, unless it writes HLS for an HTTP server):

  curl -X POST http://$api/api/v1/srs/register -H 'Content-Type: application/json' \\
       -d '{"device_id":"origin1","ip":"127.0.0.1","server":"srv1","service":"svc1","pid":"1","rtmp":["1935"],"http":["8080"],"srt":["10080"]}'

Registration is accepted from this host only until you pass --register-allow CIDR (or turn
auth on with --http-api-auth-enabled on and a token); see "Security defaults" in the README.

  curl http://$api/api/v1/origins      # what is registered, alive and proven
  curl http://$api/api/v1/streams      # which stream is pinned where (or "local": true)

New streams then go to the origin; publish the same way and play over any protocol the
origin serves:

  ffplay rtmp://$rtmp/live/demo                                # RTMP
  ffplay http://$http/live/demo.flv                            # HTTP-FLV
  ffplay http://$http/live/demo.m3u8                           # HLS (the origin writes it)
  ffplay 'srt://$srt?streamid=#!::r=live/demo,m=request'       # SRT

Stop with Ctrl-C (connections drain for up to --grace-quit-timeout).
HELP
}

while IFS= read -r line; do
  printf '%s\n' "$line" >&2
  case $line in
    *" started: "*)
      announce "$line" >&2
      exec cat >&2
      ;;
  esac
done
