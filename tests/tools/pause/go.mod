module toolhive-operator/tests/tools/pause

go 1.26.0
