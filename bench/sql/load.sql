-- Both files into memory, typed; money as exact DECIMAL(18,2).
CREATE OR REPLACE TABLE accounts AS
SELECT * FROM read_ndjson('{accounts}', columns = {{
    mandatorId: 'VARCHAR', userId: 'VARCHAR', accountId: 'VARCHAR', accountType: 'VARCHAR',
    currency: 'VARCHAR', balance: 'DECIMAL(18,2)', balanceDate: 'DATE'}});

CREATE OR REPLACE TABLE transactions AS
SELECT * FROM read_ndjson('{transactions}', columns = {{
    mandatorId: 'VARCHAR', userId: 'VARCHAR', accountId: 'VARCHAR', transactionId: 'VARCHAR',
    bookingDate: 'DATE', amount: 'DECIMAL(18,2)', currency: 'VARCHAR', counterpartName: 'VARCHAR',
    purpose: 'VARCHAR', labels: 'VARCHAR[]'}});
