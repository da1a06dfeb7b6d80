#!/bin/sh
# GET /: the default page, naming the instance that answered.
. /knobs.sh
slow
reply
echo "hello from $(hostname)"
