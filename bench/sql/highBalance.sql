-- highBalance (docs/semantics.md): accounts of the type (and currency) whose balance at the end of asOf,
-- balance - Σ amounts with asOf < bookingDate <= balanceDate, is strictly above the threshold.
COPY (
    WITH candidates AS (
        SELECT userId, accountId, balance, balanceDate FROM accounts
        WHERE accountType = '{account_type}' AND ({currency} IS NULL OR currency = {currency})
    ),
    later AS (
        SELECT c.userId, c.accountId, sum(t.amount) AS s
        FROM candidates c JOIN transactions t ON t.userId = c.userId AND t.accountId = c.accountId
        WHERE t.bookingDate > DATE '{as_of}' AND t.bookingDate <= c.balanceDate
        GROUP BY c.userId, c.accountId
    ),
    at_as_of AS (
        SELECT c.userId, c.accountId, c.balance - coalesce(l.s, 0) AS amount
        FROM candidates c LEFT JOIN later l ON l.userId = c.userId AND l.accountId = c.accountId
    )
    SELECT userId,
           list({{'accountId': accountId, 'amount': CAST(amount AS VARCHAR)}} ORDER BY accountId) AS accounts
    FROM at_as_of
    WHERE amount > {threshold}
    GROUP BY userId
    ORDER BY userId
) TO '{out}' (FORMAT json);
