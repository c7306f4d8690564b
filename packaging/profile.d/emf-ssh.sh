# emf-ssh login banner: one line of policy for interactive shells.
case $- in
    *i*)
        if command -v emf-ssh >/dev/null 2>&1; then
            echo "This instance stops itself when nobody uses it (emf-ssh). Keep it up: emf-ssh hold --for 2h | why: emf-ssh status"
        fi
        ;;
esac
