#!/bin/sh
# The example service: busybox httpd on :8080 serving /www (CGI knobs in /www/cgi-bin).
# sh stays pid 1 so that /cgi-bin/crash can end the instance with an exit code of its
# choosing, and SIGTERM stops it at once.
mkdir -p /tmp/knobs
httpd -f -v -p "${PORT:-8080}" -h /www &
echo $! > /tmp/knobs/httpd.pid
trap 'kill "$(cat /tmp/knobs/httpd.pid)"; exit 0' TERM INT
wait
exit "$(cat /tmp/knobs/exit 2>/dev/null || echo 1)"
