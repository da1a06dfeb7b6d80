# Sourced by every CGI: the reply header, and the latency /cgi-bin/slow set (if any).
reply() {
    printf 'Content-Type: text/plain\r\n\r\n'
}
slow() {
    [ -f /tmp/knobs/slow ] && sleep "$(cat /tmp/knobs/slow)"
    return 0
}
# the number in the query string (?N), or $1 when there is none
number() {
    case "$QUERY_STRING" in
        ''|*[!0-9.]*) echo "$1" ;;
        *) echo "$QUERY_STRING" ;;
    esac
}
